import { publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import {
  serviceCapabilities,
  type AbortOptions,
  type ConnectionEncrypter,
  type Logger,
  type MessageStream,
  type PrivateKey,
  type PublicKey,
  type SecureConnectionOptions,
  type SecuredConnection,
  type StreamCloseEvent,
  type StreamMuxerFactory
} from '@libp2p/interface'
import { noise, type NoiseComponents, type NoiseExtensions, type NoiseInit } from '@libp2p/noise'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { AbstractMessageStream, lpStream, type LengthPrefixedStream, type SendResult } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'

/** Noise transport messages: a 2-byte big-endian length, then at most 65535 bytes with the tag. */
const MAX_MESSAGE = 65535
const TAG = 16
const MAX_PLAINTEXT = MAX_MESSAGE - TAG
/**
 * @libp2p/noise decrypts messages this long and longer with node:crypto, which takes a list of
 * pieces; shorter ones with WebAssembly, which needs them contiguous.
 */
const NATIVE_FROM = 1200

interface Handshake {
  readonly payload: { readonly identityKey: Uint8Array; readonly extensions?: NoiseExtensionsPayload }
  encrypt(plaintext: Uint8Array | Uint8ArrayList): Uint8Array | Uint8ArrayList
  decrypt(ciphertext: Uint8Array | Uint8ArrayList, dst?: Uint8Array): Uint8Array | Uint8ArrayList
}
interface NoiseExtensionsPayload extends NoiseExtensions {
  readonly streamMuxers?: string[]
}
type PerformHandshake = (
  connection: LengthPrefixedStream,
  privateKey: PrivateKey,
  log: Logger,
  remoteIdentityKey: PublicKey | undefined,
  options?: SecureConnectionOptions
) => Promise<Handshake>
/** The parts of @libp2p/noise 17's Noise class we use (pinned exactly in package.json). */
interface NoiseInternals extends ConnectionEncrypter<NoiseExtensions> {
  performHandshakeInitiator: PerformHandshake
  performHandshakeResponder: PerformHandshake
  getStreamMuxer(protocols?: string[]): StreamMuxerFactory | undefined
}

const uint16BE = (value: number): Uint8Array => new Uint8Array([value >> 8, value & 0xff])
const readUint16BE = (data: Uint8ArrayList): number => {
  if (data.byteLength < 2) throw new RangeError('not enough bytes for a length')
  return data.getUint16(0)
}

/**
 * Noise as @libp2p/noise does it, same handshake (its own code) and same bytes on the wire, with
 * our own transport phase. Theirs decodes with a length reader that throws (and captures a stack)
 * at the end of every chunk read, about 7% of a tunnel process's CPU per small RPC message, and
 * copies a received message that spans reads before decrypting it (we decrypt the pieces).
 */
export function leanNoise(
  init?: NoiseInit
): (components: NoiseComponents) => ConnectionEncrypter<NoiseExtensions> {
  const factory = noise(init)
  return (components) => {
    const inner = factory(components) as NoiseInternals
    const secure =
      (handshake: 'performHandshakeInitiator' | 'performHandshakeResponder') =>
      async (
        connection: MessageStream,
        options?: SecureConnectionOptions
      ): Promise<SecuredConnection<NoiseExtensions>> => {
        const log = connection.log.newScope('noise')
        const framed = lpStream(connection, {
          lengthEncoder: uint16BE,
          lengthDecoder: readUint16BE,
          maxDataLength: MAX_MESSAGE
        })
        const result = await inner[handshake].call(
          inner,
          framed,
          components.privateKey,
          log,
          options?.remotePeer?.publicKey,
          options
        )
        const muxers = result.payload.extensions?.streamMuxers
        const streamMuxer =
          options?.skipStreamMuxerNegotiation === true ? undefined : inner.getStreamMuxer(muxers)
        return {
          connection: new NoiseTransport(framed.unwrap(), result),
          ...(result.payload.extensions === undefined ? {} : { remoteExtensions: result.payload.extensions }),
          remotePeer: peerIdFromPublicKey(publicKeyFromProtobuf(result.payload.identityKey)),
          ...(streamMuxer === undefined ? {} : { streamMuxer })
        }
      }
    return {
      protocol: inner.protocol,
      [Symbol.toStringTag]: '@frankenstein-mesh/lean-noise',
      [serviceCapabilities]: ['@libp2p/connection-encryption', '@libp2p/noise'],
      secureOutbound: secure('performHandshakeInitiator'),
      secureInbound: secure('performHandshakeResponder')
    }
  }
}

/** The encrypted connection after the handshake: Noise transport messages over `stream`. */
class NoiseTransport extends AbstractMessageStream {
  private readonly stream: MessageStream
  private readonly handshake: Handshake
  /** Received bytes not yet a whole message. */
  private chunks: Uint8Array[] = []
  private buffered = 0

  constructor(stream: MessageStream, handshake: Handshake) {
    super({
      log: stream.log,
      inactivityTimeout: stream.inactivityTimeout,
      maxReadBufferLength: stream.maxReadBufferLength,
      direction: stream.direction
    })
    this.stream = stream
    this.handshake = handshake
    stream.addEventListener('message', (evt) => {
      try {
        this.receive(evt.data)
      } catch (err) {
        this.abort(err instanceof Error ? err : new Error(String(err)))
      }
    })
    stream.addEventListener('close', (evt: StreamCloseEvent) => {
      if (evt.error === undefined) this.onTransportClosed()
      else if (evt.local === true) this.abort(evt.error)
      else this.onRemoteReset()
    })
    stream.addEventListener('drain', () => this.safeDispatchEvent('drain'))
    stream.addEventListener('remoteCloseWrite', () => this.onRemoteCloseWrite())
  }

  private receive(data: Uint8Array | Uint8ArrayList): void {
    for (const chunk of data instanceof Uint8Array ? [data] : data) {
      this.chunks.push(chunk)
      this.buffered += chunk.byteLength
    }
    while (this.buffered >= 2) {
      const length = (this.byteAt(0) << 8) | this.byteAt(1)
      if (this.buffered < 2 + length) return
      this.take(2)
      if (length < TAG) throw new Error('noise message shorter than its tag')
      if (length >= NATIVE_FROM && (this.chunks[0] as Uint8Array).byteLength < length) {
        // A large message across reads: node:crypto decrypts the pieces as they are.
        this.onData(this.handshake.decrypt(this.takePieces(length)))
      } else {
        const message = this.take(length)
        // Decrypting in place is safe: the bytes are ours alone once taken from the read buffer.
        this.onData(this.handshake.decrypt(message, message.subarray(0, length - TAG)))
      }
    }
  }

  private byteAt(index: number): number {
    let offset = index
    for (const chunk of this.chunks) {
      if (offset < chunk.byteLength) return chunk[offset] as number
      offset -= chunk.byteLength
    }
    throw new RangeError('read past the buffered bytes')
  }

  /** The next `n` buffered bytes as views of the reads they arrived in. */
  private takePieces(n: number): Uint8ArrayList {
    const out = new Uint8ArrayList()
    while (out.byteLength < n)
      out.append(this.take(Math.min(n - out.byteLength, (this.chunks[0] as Uint8Array).byteLength)))
    return out
  }

  /** The next `n` buffered bytes, copied only when they span reads. */
  private take(n: number): Uint8Array {
    this.buffered -= n
    const first = this.chunks[0] as Uint8Array
    if (first.byteLength > n) {
      this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    if (first.byteLength === n) {
      this.chunks.shift()
      return first
    }
    const out = new Uint8Array(n)
    let filled = 0
    while (filled < n) {
      const chunk = this.chunks[0] as Uint8Array
      const part = Math.min(chunk.byteLength, n - filled)
      out.set(chunk.subarray(0, part), filled)
      filled += part
      if (part === chunk.byteLength) this.chunks.shift()
      else this.chunks[0] = chunk.subarray(part)
    }
    return out
  }

  sendData(data: Uint8ArrayList): SendResult {
    const out = new Uint8ArrayList()
    for (let start = 0; start < data.byteLength; start += MAX_PLAINTEXT) {
      const end = Math.min(start + MAX_PLAINTEXT, data.byteLength)
      const sealed = this.handshake.encrypt(data.sublist(start, end))
      out.append(uint16BE(sealed.byteLength))
      out.append(sealed)
    }
    return { sentBytes: data.byteLength, canSendMore: this.stream.send(out) }
  }

  async close(options?: AbortOptions): Promise<void> {
    await this.stream.close(options)
  }

  sendReset(err: Error): void {
    this.stream.abort(err)
  }

  sendPause(): void {
    this.stream.pause()
  }

  sendResume(): void {
    this.stream.resume()
  }
}
