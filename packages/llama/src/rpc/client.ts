import { connect, type Socket } from 'node:net'
import { RpcClientError } from '../errors.ts'
import { readU64 } from './byte-frames.ts'
import { encodeRequest } from './encode.ts'
import { COMMAND_SPECS, CONN_CAPS_SIZE, RPC_PROTOCOL_VERSION, RpcCommand, commandName } from './protocol.ts'

export interface RpcVersion {
  readonly major: number
  readonly minor: number
  readonly patch: number
}

export interface DeviceMemory {
  readonly free: number
  readonly total: number
}

export interface RpcClientInit {
  readonly port: number
  /** Always loopback unless a test says otherwise: rpc-server must never face a network. */
  readonly host?: string | undefined
  /** Bounds every call, including the connect and HELLO. */
  readonly timeoutMs?: number | undefined
  readonly signal?: AbortSignal | undefined
}

export interface RpcClient {
  readonly version: RpcVersion
  deviceCount(): Promise<number>
  deviceMemory(device: number): Promise<DeviceMemory>
  close(): void
}

const DEFAULT_TIMEOUT_MS = 5_000

/**
 * Connects to an rpc-server and says HELLO (transport caps zeroed, so no RDMA upgrade). Keep it
 * short-lived: rpc-server serves one client at a time, and llama-server waits while we are on.
 */
export async function connectRpc(init: RpcClientInit): Promise<RpcClient> {
  const timeoutMs = init.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const socket = connect({ host: init.host ?? '127.0.0.1', port: init.port, noDelay: true })
  const reader = new SocketReader(socket)
  const call = async (command: RpcCommand, payload: Uint8Array): Promise<Uint8Array> => {
    const signals = [AbortSignal.timeout(timeoutMs), ...(init.signal === undefined ? [] : [init.signal])]
    return await request(socket, reader, command, payload, AbortSignal.any(signals))
  }
  try {
    const hello = await call(RpcCommand.Hello, new Uint8Array(CONN_CAPS_SIZE))
    const version = { major: hello[0] ?? 0, minor: hello[1] ?? 0, patch: hello[2] ?? 0 }
    if (version.major !== RPC_PROTOCOL_VERSION.major) {
      throw new RpcClientError(
        'ERR_RPC_VERSION',
        `rpc-server speaks protocol ${version.major}.${version.minor}.${version.patch}, we speak ${RPC_PROTOCOL_VERSION.major}.x`
      )
    }
    return {
      version,
      deviceCount: async () => u32(await call(RpcCommand.DeviceCount, new Uint8Array(0))),
      deviceMemory: async (device) => {
        const reply = await call(RpcCommand.GetDeviceMemory, u32Bytes(device))
        return { free: readU64(reply, 0), total: readU64(reply, 8) }
      },
      close: () => socket.destroy()
    }
  } catch (err) {
    socket.destroy()
    throw err
  }
}

async function request(
  socket: Socket,
  reader: SocketReader,
  command: RpcCommand,
  payload: Uint8Array,
  signal: AbortSignal
): Promise<Uint8Array> {
  socket.write(encodeRequest(command, payload))
  const expected = COMMAND_SPECS[command]?.response
  if (typeof expected !== 'number')
    throw new RpcClientError('ERR_RPC_CLIENT', `${commandName(command)} unsupported`)
  const size = readU64(await reader.read(8, signal), 0)
  if (size !== expected) {
    throw new RpcClientError(
      'ERR_RPC_BAD_REPLY',
      `${commandName(command)} reply of ${size} bytes, expected ${expected}`
    )
  }
  return await reader.read(size, signal)
}

function u32(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true)
}

function u32Bytes(value: number): Uint8Array {
  const bytes = new Uint8Array(4)
  new DataView(bytes.buffer).setUint32(0, value, true)
  return bytes
}

function abortError(signal: AbortSignal): RpcClientError {
  const reason: unknown = signal.reason
  if (reason instanceof DOMException && reason.name === 'TimeoutError') {
    return new RpcClientError(
      'ERR_RPC_TIMEOUT',
      'rpc-server did not answer in time (busy with another client?)',
      {
        cause: reason
      }
    )
  }
  return new RpcClientError('ERR_RPC_ABORTED', 'RPC call aborted', { cause: reason })
}

/** Reads exact byte counts from a socket, failing on close, error, timeout or abort. */
class SocketReader {
  private chunks: Buffer[] = []
  private buffered = 0
  private ended: Error | null = null
  private wake: (() => void) | null = null

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk)
      this.buffered += chunk.length
      this.wake?.()
    })
    socket.on('error', (err) =>
      this.finish(new RpcClientError('ERR_RPC_CONNECT', err.message, { cause: err }))
    )
    socket.on('close', () =>
      this.finish(new RpcClientError('ERR_RPC_CLOSED', 'rpc-server closed the connection'))
    )
  }

  async read(n: number, signal: AbortSignal): Promise<Uint8Array> {
    while (this.buffered < n) {
      if (this.ended !== null) throw this.ended
      await this.nextEvent(signal)
    }
    const all = Buffer.concat(this.chunks)
    this.chunks = all.length > n ? [all.subarray(n)] : []
    this.buffered -= n
    return all.subarray(0, n)
  }

  private finish(err: Error): void {
    this.ended ??= err
    this.wake?.()
  }

  private async nextEvent(signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw abortError(signal)
    const { promise, resolve, reject } = Promise.withResolvers<undefined>()
    const onAbort = (): void => {
      reject(abortError(signal))
    }
    signal.addEventListener('abort', onAbort, { once: true })
    this.wake = () => resolve(undefined)
    try {
      await promise
    } finally {
      this.wake = null
      signal.removeEventListener('abort', onAbort)
    }
  }
}
