import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, connect, type Socket } from 'node:net'
import { after, describe, it } from 'node:test'
import type { Stream } from '@libp2p/interface'
import { createMeshNode, ephemeralPrivateKey } from '../src/index.ts'
import { oneWritePerSend } from '../src/one-write-tcp.ts'

/** A connected loopback socket pair; both ends are destroyed after the test file. */
async function socketPair(): Promise<{ client: Socket; server: Socket }> {
  const listener = createServer()
  listener.listen(0, '127.0.0.1')
  await once(listener, 'listening')
  const address = listener.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  const accepted = once(listener, 'connection') as Promise<[Socket]>
  const client = connect({ host: '127.0.0.1', port: address.port, noDelay: true })
  const [server] = await accepted
  listener.close()
  after(() => {
    client.destroy()
    server.destroy()
  })
  return { client, server }
}

const pieces = (...bufs: Uint8Array[]) =>
  Object.assign(bufs, { byteLength: bufs.reduce((n, b) => n + b.byteLength, 0) })

/** Counts the writes a socket hands to its handle. */
function countWrites(socket: Socket): { writes: number; writevs: number } {
  const counts = { writes: 0, writevs: 0 }
  const internals = socket as unknown as Record<'_write' | '_writev', (...args: unknown[]) => void>
  const write = internals._write.bind(socket)
  const writev = internals._writev.bind(socket)
  internals._write = (...args) => {
    counts.writes++
    write(...args)
  }
  internals._writev = (...args) => {
    counts.writevs++
    writev(...args)
  }
  return counts
}

describe('one write per send', () => {
  it('writes the pieces of one send at once, in order', async () => {
    const { client, server } = await socketPair()
    const original = (_data: unknown): never => assert.fail('the original sendData must not run')
    const maConn = oneWritePerSend({ socket: client, sendData: original })
    const counts = countWrites(client)
    const received: Buffer[] = []
    server.on('data', (chunk: Buffer) => received.push(chunk))
    const result = maConn.sendData(pieces(Buffer.from([0, 5]), Buffer.from('hello'), Buffer.from('-tag')))
    assert.deepEqual(result, { sentBytes: 11, canSendMore: true })
    assert.deepEqual(counts, { writes: 0, writevs: 1 })
    const deadline = Date.now() + 5_000
    while (Buffer.concat(received).length < 11 && Date.now() < deadline) await once(server, 'data')
    assert.deepEqual(Buffer.concat(received), Buffer.concat([Buffer.from([0, 5]), Buffer.from('hello-tag')]))
  })

  it('asks for a drain while the socket holds more than its high-water mark, and the drain comes', async () => {
    const { client, server } = await socketPair()
    server.pause()
    const maConn = oneWritePerSend({
      socket: client,
      sendData: (_data: unknown): never => assert.fail('replaced')
    })
    const mib = Buffer.alloc(1024 * 1024, 1)
    const result = maConn.sendData(pieces(...Array.from({ length: 32 }, () => mib)))
    assert.deepEqual(result, { sentBytes: 32 * 1024 * 1024, canSendMore: false })
    const drained = once(client, 'drain')
    server.resume()
    await Promise.race([
      drained,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no drain')), 10_000))
    ])
    assert.ok(client.writableLength < client.writableHighWaterMark)
  })

  it('leaves a connection that has no socket as it is', () => {
    const sendData = () => ({ sentBytes: 0, canSendMore: true })
    const maConn = oneWritePerSend({ sendData })
    assert.equal(maConn.sendData, sendData)
  })

  it('carries a libp2p stream both ways between two mesh nodes', async () => {
    const [a, b] = await Promise.all(
      [0, 1].map(async () =>
        createMeshNode({ privateKey: await ephemeralPrivateKey(), listen: ['/ip4/127.0.0.1/tcp/0'] })
      )
    )
    assert.ok(a !== undefined && b !== undefined)
    after(() => Promise.all([a.stop(), b.stop()]))
    await b.handle('/test/echo/1.0.0', (stream: Stream) => {
      stream.addEventListener('message', (evt) => stream.send(evt.data))
      stream.addEventListener('remoteCloseWrite', () => void stream.close())
    })
    const stream = await a.dialProtocol(b.getMultiaddrs(), '/test/echo/1.0.0')
    const payload = Buffer.alloc(3 * 1024 * 1024)
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff
    const echoed: Uint8Array[] = []
    let length = 0
    const done = new Promise<void>((resolve, reject) => {
      stream.addEventListener('message', (evt) => {
        for (const part of evt.data instanceof Uint8Array ? [evt.data] : evt.data) {
          echoed.push(part.slice())
          length += part.byteLength
        }
        if (length >= payload.length) resolve()
      })
      stream.addEventListener('close', () => reject(new Error('closed early')))
      setTimeout(() => reject(new Error('echo timed out')), 20_000).unref()
    })
    for (let offset = 0; offset < payload.length; offset += 100_000) {
      stream.send(payload.subarray(offset, offset + 100_000))
    }
    await done
    assert.deepEqual(Buffer.concat(echoed), payload)
    await stream.close()
  })
})
