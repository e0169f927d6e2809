/**
 * A bench reference, not a transport: one hop of a two-process relay that seals every read as a
 * ChaCha20-Poly1305 message (node:crypto, a 2-byte length before it, as Noise frames its transport
 * messages), with no libp2p, no handshake and no multiplexing. Two of them in a chain give the
 * floor for any Noise tunnel written in Node on this machine: what the tunnel costs beyond it is
 * its layers, what it costs below the plain proxy chain is encryption.
 *
 * The keys come from the environment (FM_SEALED_KEYS: two hex keys, one per direction), chosen
 * at random by the bench for each run. Prints `listening <port>` once ready.
 * Usage: node bench/tools/sealed-relay.ts seal|open <target-host> <target-port> [listen-host]
 *   seal: the near end (plaintext in from the client, sealed out to the far end)
 *   open: the far end (sealed in from the near end, plaintext out to the target)
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto'
import { connect, createServer, type Socket } from 'node:net'

const [role = '', targetHost = '127.0.0.1', targetPort = '0', listenHost = '127.0.0.1'] =
  process.argv.slice(2)
const [upKey = '', downKey = ''] = (process.env['FM_SEALED_KEYS'] ?? '').split(',')
if ((role !== 'seal' && role !== 'open') || upKey.length !== 64 || downKey.length !== 64) {
  console.error('usage: FM_SEALED_KEYS=<hex>,<hex> node bench/tools/sealed-relay.ts seal|open <host> <port>')
  process.exit(2)
}
const TAG = 16
const MAX_PLAINTEXT = 65535 - TAG
const key = (hex: string): KeyObject => createSecretKey(Buffer.from(hex, 'hex'))

/** Noise's nonce: 4 zero bytes, then a 64-bit little-endian counter. */
function nonce(counter: number): Buffer {
  const bytes = Buffer.alloc(12)
  bytes.writeBigUInt64LE(BigInt(counter), 4)
  return bytes
}

/** Writes `chunk` to `to`, pausing `from` until `to` drains if it is full. */
function forward(from: Socket, to: Socket, chunk: Uint8Array): void {
  if (!to.write(chunk) && !from.isPaused()) {
    from.pause()
    to.once('drain', () => from.resume())
  }
}

function seal(from: Socket, to: Socket, secret: KeyObject): void {
  let counter = 0
  from.on('data', (chunk: Buffer) => {
    to.cork()
    for (let at = 0; at < chunk.byteLength; at += MAX_PLAINTEXT) {
      const piece = chunk.subarray(at, at + MAX_PLAINTEXT)
      const cipher = createCipheriv('chacha20-poly1305', secret, nonce(counter++), { authTagLength: TAG })
      const body = cipher.update(piece)
      cipher.final()
      const length = Buffer.allocUnsafe(2)
      length.writeUInt16BE(body.byteLength + TAG)
      to.write(length)
      to.write(body)
      forward(from, to, cipher.getAuthTag())
    }
    to.uncork()
  })
}

function open(from: Socket, to: Socket, secret: KeyObject): void {
  let counter = 0
  let pending: Buffer = Buffer.alloc(0)
  from.on('data', (chunk: Buffer) => {
    pending = pending.byteLength === 0 ? chunk : Buffer.concat([pending, chunk])
    while (pending.byteLength >= 2) {
      const length = pending.readUInt16BE(0)
      if (pending.byteLength < 2 + length) return
      const message = pending.subarray(2, 2 + length)
      pending = pending.subarray(2 + length)
      const decipher = createDecipheriv('chacha20-poly1305', secret, nonce(counter++), { authTagLength: TAG })
      decipher.setAuthTag(message.subarray(length - TAG))
      const plaintext = decipher.update(message.subarray(0, length - TAG))
      try {
        decipher.final()
      } catch {
        from.destroy(new Error('sealed message failed authentication'))
        return
      }
      forward(from, to, plaintext)
    }
  })
}

const [up, down] = [key(upKey), key(downKey)]
const server = createServer({ noDelay: true }, (incoming) => {
  const outgoing = connect({ host: targetHost, port: Number(targetPort), noDelay: true })
  if (role === 'seal') {
    seal(incoming, outgoing, up)
    open(outgoing, incoming, down)
  } else {
    open(incoming, outgoing, up)
    seal(outgoing, incoming, down)
  }
  for (const [a, b] of [
    [incoming, outgoing],
    [outgoing, incoming]
  ] as const) {
    a.on('error', () => b.destroy())
    a.on('close', () => b.destroy())
  }
})
server.listen({ host: listenHost, port: 0 }, () => {
  const address = server.address()
  if (address !== null && typeof address !== 'string') console.log(`listening ${address.port}`)
})
process.on('SIGTERM', () => process.exit(0))
