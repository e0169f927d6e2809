import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { connect, createServer, type Socket } from 'node:net'
import { after, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import type { ConnectionEncrypter, Libp2p, Stream } from '@libp2p/interface'
import { noise, type NoiseComponents } from '@libp2p/noise'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { ephemeralPrivateKey } from '../src/index.ts'
import { leanNoise } from '../src/lean-noise.ts'

const ECHO = '/test/echo/1.0.0'
type Encrypter = (components: NoiseComponents) => ConnectionEncrypter

/** A node with one encrypter, echoing every stream on ECHO; stopped after the test file. */
async function echoNode(encrypter: Encrypter): Promise<Libp2p> {
  const node = await createLibp2p({
    privateKey: await ephemeralPrivateKey(),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [encrypter],
    streamMuxers: [yamux()]
  })
  after(() => node.stop())
  await node.handle(ECHO, (stream: Stream) => {
    stream.addEventListener('message', (evt) => stream.send(evt.data))
    stream.addEventListener('remoteCloseWrite', () => void stream.close())
  })
  return node
}

/** Sends `payload` on a new echo stream and resolves with what came back, or rejects when the stream dies. */
async function echo(stream: Stream, payload: Uint8Array): Promise<Buffer> {
  const parts: Buffer[] = []
  let length = 0
  const done = new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('echo timed out')), 20_000)
    stream.addEventListener('message', (evt) => {
      for (const part of evt.data instanceof Uint8Array ? [evt.data] : evt.data) {
        parts.push(Buffer.from(part))
        length += part.byteLength
      }
      if (length >= payload.byteLength) {
        clearTimeout(timer)
        resolve(Buffer.concat(parts))
      }
    })
    stream.addEventListener('close', (evt) => {
      clearTimeout(timer)
      reject(evt.error ?? new Error('stream closed before the echo came back'))
    })
  })
  for (let offset = 0; offset < payload.byteLength; offset += 200_000) {
    stream.send(payload.subarray(offset, offset + 200_000))
  }
  return done
}

/**
 * A TCP relay to `port` that flips one bit of what the dialer sends once `after` bytes went
 * through in that direction (the handshake is a few hundred bytes).
 */
async function tamperingRelay(port: number, afterBytes: number): Promise<number> {
  const sockets: Socket[] = []
  const server = createServer((inbound) => {
    const outbound = connect({ host: '127.0.0.1', port })
    sockets.push(inbound, outbound)
    let seen = 0
    inbound.on('data', (chunk: Buffer) => {
      if (seen <= afterBytes && seen + chunk.length > afterBytes) {
        const at = afterBytes - seen
        chunk.writeUInt8(chunk.readUInt8(at) ^ 0x01, at)
      }
      seen += chunk.length
      outbound.write(chunk)
    })
    outbound.on('data', (chunk: Buffer) => inbound.write(chunk))
    for (const [a, b] of [
      [inbound, outbound],
      [outbound, inbound]
    ] as const) {
      a.on('error', () => b.destroy())
      a.on('close', () => b.destroy())
    }
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  after(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

describe('lean noise', () => {
  const payload = randomBytes(3 * 1024 * 1024 + 17)

  for (const [dialer, listener] of [
    ['lean', 'stock'],
    ['stock', 'lean']
  ] as const) {
    it(`carries a stream both ways between a ${dialer} dialer and a ${listener} @libp2p/noise listener`, async () => {
      const pick = (kind: 'lean' | 'stock'): Encrypter => (kind === 'lean' ? leanNoise() : noise())
      const [a, b] = await Promise.all([echoNode(pick(dialer)), echoNode(pick(listener))])
      const stream = await a.dialProtocol(b.getMultiaddrs(), ECHO)
      assert.deepEqual(await echo(stream, payload), payload)
      // Small messages too: each is one Noise message, decrypted on its own.
      for (const size of [1, 100, 1199, 1200, 4096 + 37]) {
        const small = randomBytes(size)
        const back = await echo(await a.dialProtocol(b.getMultiaddrs(), ECHO), small)
        assert.deepEqual(back, small)
      }
      await stream.close()
    })
  }

  it('ends the connection on a flipped bit, and delivers nothing of the forged message', async () => {
    const [a, b] = await Promise.all([echoNode(leanNoise()), echoNode(leanNoise())])
    const target = b.getMultiaddrs()[0]
    assert.ok(target !== undefined)
    const relayPort = await tamperingRelay(Number(/\/tcp\/(\d+)/.exec(target.toString())?.[1]), 64 * 1024)
    const address = multiaddr(`/ip4/127.0.0.1/tcp/${relayPort}/p2p/${b.peerId.toString()}`)
    const stream = await a.dialProtocol(address, ECHO)
    const marked = Buffer.alloc(1024 * 1024, 0x5a)
    const received: Uint8Array[] = []
    stream.addEventListener('message', (evt) => received.push(evt.data.subarray()))
    await assert.rejects(echo(stream, marked))
    // What did come back passed the tag check: the flipped bit is in none of it.
    assert.ok(received.every((part) => part.every((byte) => byte === 0x5a)))
    const deadline = Date.now() + 5_000
    while (b.getConnections(a.peerId).length > 0 && Date.now() < deadline) await delay(50)
    assert.equal(b.getConnections(a.peerId).length, 0)
  })
})
