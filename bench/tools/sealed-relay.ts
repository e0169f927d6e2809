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
import { tuneGcForBulkTraffic } from '@frankenstein-mesh/mesh'

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
  // Received bytes not yet a whole message, as the reads brought them: a message is decrypted
  // piece by piece from these views, never copied together first.
  const pieces: Buffer[] = []
  let buffered = 0
  const take = (n: number): Buffer[] => {
    const out: Buffer[] = []
    while (n > 0) {
      const first = pieces[0] as Buffer
      if (first.byteLength <= n) {
        out.push(first)
        pieces.shift()
        n -= first.byteLength
      } else {
        out.push(first.subarray(0, n))
        pieces[0] = first.subarray(n)
        n = 0
      }
    }
    return out
  }
  from.on('data', (chunk: Buffer) => {
    pieces.push(chunk)
    buffered += chunk.byteLength
    while (buffered >= 2) {
      const first = pieces[0] as Buffer
      const length =
        first.byteLength >= 2 ? first.readUInt16BE(0) : (first[0] as number) * 256 + (pieces[1]?.[0] ?? 0)
      if (buffered < 2 + length) return
      take(2)
      const body = take(length - TAG)
      const tag = Buffer.concat(take(TAG))
      buffered -= 2 + length
      const decipher = createDecipheriv('chacha20-poly1305', secret, nonce(counter++), { authTagLength: TAG })
      decipher.setAuthTag(tag)
      const plaintext = body.map((piece) => decipher.update(piece))
      try {
        decipher.final()
      } catch {
        from.destroy(new Error('sealed message failed authentication'))
        return
      }
      for (const piece of plaintext) forward(from, to, piece)
    }
  })
}

tuneGcForBulkTraffic() // as our tunnel's processes do: the comparison is of the data path
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
