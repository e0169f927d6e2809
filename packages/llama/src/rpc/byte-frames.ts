/**
 * The shared core of both RPC stream parsers: split a byte stream into frames of
 * `header | head | body`, where the header has a fixed length, the head is a prefix of the payload
 * that the caller needs whole (it is handed over contiguous, zero-copy when it arrived in one
 * chunk), and the body streams through as views of the input, never buffered.
 */

export interface FrameHooks {
  readonly headerSize: number
  /** Reads a complete header; returns the payload size and how much of it belongs in the head. */
  readHeader(header: Uint8Array): { payloadSize: number; headSize: number }
  /** Header plus head, contiguous. The array may be rewritten in place before it is forwarded. */
  onFrame(frame: Uint8Array, payloadSize: number): void
  /** Payload bytes past the head, in order, as views of the input chunk. */
  onBody(bytes: Uint8Array): void
}

export class ByteFrames {
  private readonly hooks: FrameHooks
  private readonly header: Uint8Array
  private headerFill = 0
  /** Header + head being gathered across chunks. */
  private gathering: Uint8Array | null = null
  private gatherFill = 0
  private payloadSize = 0
  private bodyLeft = 0
  private failure: Error | null = null

  constructor(hooks: FrameHooks) {
    this.hooks = hooks
    this.header = new Uint8Array(hooks.headerSize)
  }

  /** True between frames: a stream may end cleanly only here. */
  get atBoundary(): boolean {
    return this.failure === null && this.headerFill === 0 && this.gathering === null && this.bodyLeft === 0
  }

  /** Parses a chunk. The first error a hook throws is final: every later push rethrows it. */
  push(chunk: Uint8Array): void {
    if (this.failure !== null) throw this.failure
    try {
      this.parse(chunk)
    } catch (err) {
      this.failure = err instanceof Error ? err : new Error(String(err))
      throw this.failure
    }
  }

  private parse(chunk: Uint8Array): void {
    let pos = 0
    while (pos < chunk.length) {
      if (this.bodyLeft > 0) {
        const n = Math.min(this.bodyLeft, chunk.length - pos)
        this.bodyLeft -= n
        this.hooks.onBody(chunk.subarray(pos, pos + n))
        pos += n
      } else if (this.gathering !== null) {
        pos = this.gather(chunk, pos)
      } else {
        pos = this.readHeader(chunk, pos)
      }
    }
  }

  private readHeader(chunk: Uint8Array, pos: number): number {
    const size = this.hooks.headerSize
    if (this.headerFill === 0 && chunk.length - pos >= size) {
      const { payloadSize, headSize } = this.hooks.readHeader(chunk.subarray(pos, pos + size))
      if (chunk.length - pos - size >= headSize) {
        const end = pos + size + headSize
        this.emit(chunk.subarray(pos, end), payloadSize, headSize)
        return end
      }
      this.startGathering(chunk.subarray(pos, pos + size), payloadSize, headSize)
      return pos + size
    }
    const n = Math.min(size - this.headerFill, chunk.length - pos)
    this.header.set(chunk.subarray(pos, pos + n), this.headerFill)
    this.headerFill += n
    if (this.headerFill === size) {
      this.headerFill = 0
      const { payloadSize, headSize } = this.hooks.readHeader(this.header)
      if (headSize === 0) this.emit(this.header.slice(), payloadSize, 0)
      else this.startGathering(this.header, payloadSize, headSize)
    }
    return pos + n
  }

  private startGathering(header: Uint8Array, payloadSize: number, headSize: number): void {
    this.gathering = new Uint8Array(header.length + headSize)
    this.gathering.set(header)
    this.gatherFill = header.length
    this.payloadSize = payloadSize
  }

  private gather(chunk: Uint8Array, pos: number): number {
    const frame = this.gathering as Uint8Array
    const n = Math.min(frame.length - this.gatherFill, chunk.length - pos)
    frame.set(chunk.subarray(pos, pos + n), this.gatherFill)
    this.gatherFill += n
    if (this.gatherFill === frame.length) {
      this.gathering = null
      this.emit(frame, this.payloadSize, frame.length - this.hooks.headerSize)
    }
    return pos + n
  }

  private emit(frame: Uint8Array, payloadSize: number, headSize: number): void {
    this.bodyLeft = payloadSize - headSize
    this.hooks.onFrame(frame, payloadSize)
  }
}

/** Reads a little-endian u64 as a number; returns Infinity past 2^53 so size checks reject it. */
export function readU64(bytes: Uint8Array, offset: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const low = view.getUint32(offset, true)
  const high = view.getUint32(offset + 4, true)
  return high >= 0x200000 ? Infinity : high * 0x1_0000_0000 + low
}
