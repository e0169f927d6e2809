import { open } from 'node:fs/promises'
import { GgufError } from '../errors.ts'
import {
  GGML_TYPES,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GgufValueType,
  alignUp,
  tensorByteSize,
  type GgufValue
} from './types.ts'

export interface GgufTensorInfo {
  readonly name: string
  /** ggml order: `dims[0]` is the contiguous (row) dimension. */
  readonly dims: readonly number[]
  readonly type: number
  /** Absolute offset of the tensor's bytes in the file. */
  readonly offset: number
  readonly size: number
}

export interface GgufInfo {
  readonly version: number
  readonly metadata: ReadonlyMap<string, GgufValue>
  readonly tensors: readonly GgufTensorInfo[]
  readonly alignment: number
  /** Where tensor data begins (the header's end, aligned). */
  readonly dataOffset: number
  readonly fileSize: number
}

/** Bounds on what a header may claim, checked before anything is allocated. */
const LIMITS = {
  headerBytes: 512 * 1024 ** 2,
  stringBytes: 64 * 1024 ** 2,
  arrayItems: 1 << 26,
  entries: 1 << 20,
  dims: 4
}

/** Reads a GGUF file's metadata and tensor table without reading its tensor data. */
export async function readGguf(path: string): Promise<GgufInfo> {
  const file = await open(path, 'r').catch((err: unknown) => {
    throw new GgufError('ERR_GGUF_OPEN', `cannot open ${path}: ${(err as Error).message}`, { cause: err })
  })
  try {
    const { size: fileSize } = await file.stat()
    // Headers are usually well under 1 MiB, vocabularies aside: read a prefix, widen it on demand.
    for (let window = Math.min(fileSize, 1 << 20); ; window = Math.min(fileSize, window * 4)) {
      const prefix = Buffer.alloc(window)
      await file.read(prefix, 0, window, 0)
      try {
        return parseHeader(prefix, fileSize, path)
      } catch (err) {
        if (!(err instanceof NeedMoreBytes) || window >= fileSize) throw truncated(err, path)
        if (window >= LIMITS.headerBytes)
          throw new GgufError('ERR_GGUF_LIMIT', `${path}: header over ${LIMITS.headerBytes} bytes`)
      }
    }
  } finally {
    await file.close()
  }
}

class NeedMoreBytes extends Error {}

function truncated(err: unknown, path: string): unknown {
  return err instanceof NeedMoreBytes
    ? new GgufError('ERR_GGUF_TRUNCATED', `${path}: file ends inside its header`)
    : err
}

function parseHeader(bytes: Buffer, fileSize: number, path: string): GgufInfo {
  const cursor = new Cursor(bytes, path)
  if (cursor.u32() !== GGUF_MAGIC) throw new GgufError('ERR_GGUF_MAGIC', `${path} is not a GGUF file`)
  const version = cursor.u32()
  if (version !== 2 && version !== 3)
    throw new GgufError('ERR_GGUF_VERSION', `${path}: GGUF version ${version} unsupported`)
  const tensorCount = cursor.count(LIMITS.entries, 'tensors')
  const entryCount = cursor.count(LIMITS.entries, 'metadata entries')
  const metadata = new Map<string, GgufValue>()
  for (let i = 0; i < entryCount; i++) {
    const key = cursor.string()
    metadata.set(key, cursor.value(cursor.u32()))
  }
  const alignment = metadata.get('general.alignment') ?? GGUF_DEFAULT_ALIGNMENT
  if (typeof alignment !== 'number' || alignment <= 0 || alignment % 8 !== 0) {
    throw new GgufError('ERR_GGUF_ALIGNMENT', `${path}: bad general.alignment ${String(alignment)}`)
  }
  const raw = Array.from({ length: tensorCount }, () => cursor.tensorInfo())
  const dataOffset = alignUp(cursor.offset, alignment)
  const tensors = raw.map((t) => {
    const offset = dataOffset + t.relativeOffset
    const size = tensorByteSize(t.type, t.dims)
    if (t.relativeOffset % alignment !== 0 || offset + size > fileSize) {
      throw new GgufError(
        'ERR_GGUF_TENSOR_BOUNDS',
        `${path}: tensor ${t.name} lies outside the file or is misaligned`
      )
    }
    return { name: t.name, dims: t.dims, type: t.type, offset, size }
  })
  return { version, metadata, tensors, alignment, dataOffset, fileSize }
}

/** Sequential little-endian reads over the header prefix; throws NeedMoreBytes past its end. */
class Cursor {
  offset = 0
  private readonly bytes: Buffer
  private readonly path: string

  constructor(bytes: Buffer, path: string) {
    this.bytes = bytes
    this.path = path
  }

  private take(n: number): number {
    if (this.offset + n > this.bytes.length) throw new NeedMoreBytes()
    const at = this.offset
    this.offset += n
    return at
  }

  u32(): number {
    return this.bytes.readUInt32LE(this.take(4))
  }

  u64(): number | bigint {
    const value = this.bytes.readBigUInt64LE(this.take(8))
    return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value
  }

  count(limit: number, what: string): number {
    const n = this.u64()
    if (typeof n === 'bigint' || n > limit) {
      throw new GgufError(
        'ERR_GGUF_LIMIT',
        `${this.path}: ${String(n)} ${what} is over the limit of ${limit}`
      )
    }
    return n
  }

  string(): string {
    const length = this.count(LIMITS.stringBytes, 'string bytes')
    const at = this.take(length)
    return this.bytes.toString('utf8', at, at + length)
  }

  value(type: number): GgufValue {
    const b = this.bytes
    switch (type) {
      case GgufValueType.u8:
        return b.readUInt8(this.take(1))
      case GgufValueType.i8:
        return b.readInt8(this.take(1))
      case GgufValueType.u16:
        return b.readUInt16LE(this.take(2))
      case GgufValueType.i16:
        return b.readInt16LE(this.take(2))
      case GgufValueType.u32:
        return b.readUInt32LE(this.take(4))
      case GgufValueType.i32:
        return b.readInt32LE(this.take(4))
      case GgufValueType.f32:
        return b.readFloatLE(this.take(4))
      case GgufValueType.bool:
        return b.readUInt8(this.take(1)) !== 0
      case GgufValueType.string:
        return this.string()
      case GgufValueType.u64:
        return this.u64()
      case GgufValueType.i64:
        return safeNumber(b.readBigInt64LE(this.take(8)))
      case GgufValueType.f64:
        return b.readDoubleLE(this.take(8))
      case GgufValueType.array: {
        const itemType = this.u32()
        if (itemType === GgufValueType.array)
          throw new GgufError('ERR_GGUF_VALUE', `${this.path}: nested arrays`)
        const n = this.count(LIMITS.arrayItems, 'array items')
        return Array.from({ length: n }, () => this.value(itemType))
      }
      default:
        throw new GgufError('ERR_GGUF_VALUE', `${this.path}: unknown metadata value type ${type}`)
    }
  }

  tensorInfo(): { name: string; dims: number[]; type: number; relativeOffset: number } {
    const name = this.string()
    const nDims = this.u32()
    if (nDims < 1 || nDims > LIMITS.dims)
      throw new GgufError('ERR_GGUF_TENSOR_SHAPE', `${this.path}: ${name} has ${nDims} dims`)
    const dims = Array.from({ length: nDims }, () => this.count(2 ** 40, 'elements in a dimension'))
    const type = this.u32()
    if (!GGML_TYPES.has(type))
      throw new GgufError('ERR_GGUF_TENSOR_TYPE', `${this.path}: ${name} has unknown type ${type}`)
    const relativeOffset = this.count(Number.MAX_SAFE_INTEGER, 'offset')
    return { name, dims, type, relativeOffset }
  }
}

function safeNumber(value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(value)
    : value
}
