/**
 * Transport measurements that speak just enough llama.cpp RPC to pass through RPC-aware
 * tunnels (see test/fixtures/rpc-sink.ts on the other end): bulk upload throughput as
 * SET_TENSOR frames, and round-trip latency as a 4 KiB SET_TENSOR plus a 4 KiB GET_TENSOR (the
 * shape of one worker's per-token exchange).
 */
import { connect, type Socket } from 'node:net'
import { CONN_CAPS_SIZE, RpcCommand, encodeRequest, encodeTensor } from '@frankenstein-mesh/llama'

function u64(n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(n))
  return b
}

/** A socket with a byte counter to wait on. */
async function open(endpoint: string): Promise<{ socket: Socket; until: (bytes: number) => Promise<void> }> {
  const [host = '127.0.0.1', port = '0'] = endpoint.split(':')
  const socket = connect({ host, port: Number(port), noDelay: true })
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  let received = 0
  let waiter: { bytes: number; resolve: () => void; reject: (err: Error) => void } | undefined
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length
    if (waiter !== undefined && received >= waiter.bytes) waiter.resolve()
  })
  socket.on('close', () => waiter?.reject(new Error('connection closed')))
  const until = (bytes: number): Promise<void> =>
    new Promise((resolve, reject) => {
      if (received >= bytes) {
        resolve()
        return
      }
      waiter = { bytes, resolve, reject }
    })
  socket.write(encodeRequest(RpcCommand.Hello, new Uint8Array(CONN_CAPS_SIZE)))
  await until(8 + 28)
  received = 0
  return { socket, until }
}

const getTensor = (size: number): Buffer =>
  encodeRequest(RpcCommand.GetTensor, Buffer.concat([encodeTensor({}), u64(0), u64(size)]))

/** MB/s of `totalMiB` uploaded in 16 MiB SET_TENSOR frames, ended by one GET_TENSOR round trip. */
export async function bulkThroughput(endpoint: string, totalMiB: number): Promise<number> {
  const { socket, until } = await open(endpoint)
  const frame = encodeRequest(
    RpcCommand.SetTensor,
    Buffer.concat([encodeTensor({}), u64(0), Buffer.alloc(16 * 1024 * 1024, 7)])
  )
  const started = performance.now()
  for (let sent = 0; sent < totalMiB; sent += 16) {
    if (!socket.write(frame)) await new Promise((resolve) => socket.once('drain', resolve))
  }
  socket.write(getTensor(8))
  await until(16)
  const seconds = (performance.now() - started) / 1000
  socket.destroy()
  return (totalMiB * 1024 * 1024) / seconds / 1e6
}

/** Round-trip times in microseconds, sorted, of `count` 4 KiB exchanges after a warm-up. */
export async function roundTrips(endpoint: string, count: number): Promise<number[]> {
  const { socket, until } = await open(endpoint)
  const op = Buffer.concat([
    encodeRequest(RpcCommand.SetTensor, Buffer.concat([encodeTensor({}), u64(0), Buffer.alloc(4096, 3)])),
    getTensor(4096)
  ])
  const times: number[] = []
  let expected = 0
  for (let i = 0; i < count + 100; i++) {
    const started = performance.now()
    socket.write(op)
    expected += 8 + 4096
    await until(expected)
    if (i >= 100) times.push((performance.now() - started) * 1000)
  }
  socket.destroy()
  return times.sort((a, b) => a - b)
}

export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}
