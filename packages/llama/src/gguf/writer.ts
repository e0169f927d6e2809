import { open, rename, rm } from 'node:fs/promises'
import { GgufError } from '../errors.ts'
import {
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  GgufValueType,
  alignUp,
  tensorByteSize,
  type GgufTypedValue
} from './types.ts'

export interface GgufTensorSpec {
  readonly name: string
  readonly dims: readonly number[]
  readonly type: number
  /**
   * Fills the tensor's bytes: called with consecutive pieces of its data (at most 8 MiB each) and
   * the byte offset of each piece within the tensor.
   */
  readonly fill: (piece: Uint8Array, offset: number) => void
}

export interface GgufSpec {
  /** Written in this order; `general.alignment` is honoured when present. */
  readonly metadata: ReadonlyArray<readonly [string, GgufTypedValue]>
  readonly tensors: readonly GgufTensorSpec[]
}

export interface WriteGgufOptions {
  readonly onProgress?: ((written: number, total: number) => void) | undefined
}

const PIECE = 8 * 1024 * 1024

/** Writes a GGUF v3 file, streaming tensor data; the file appears complete or not at all. */
export async function writeGguf(
  path: string,
  spec: GgufSpec,
  options: WriteGgufOptions = {}
): Promise<number> {
  const alignment = alignmentOf(spec)
  const header = encodeHeader(spec, alignment)
  const dataStart = alignUp(header.length, alignment)
  const sizes = spec.tensors.map((t) => tensorByteSize(t.type, t.dims))
  const total = dataStart + sizes.reduce((sum, size) => alignUp(sum, alignment) + size, 0)
  const partial = `${path}.partial-${process.pid}`
  const file = await open(partial, 'w')
  try {
    await file.write(header, 0, header.length, 0)
    let offset = dataStart
    const piece = new Uint8Array(PIECE)
    for (const [i, tensor] of spec.tensors.entries()) {
      const size = sizes[i] as number
      for (let done = 0; done < size; done += PIECE) {
        const view = piece.subarray(0, Math.min(PIECE, size - done))
        tensor.fill(view, done)
        await file.write(view, 0, view.length, offset + done)
        options.onProgress?.(offset + done + view.length, total)
      }
      offset = alignUp(offset + size, alignment)
    }
    await file.truncate(total)
    await file.close()
    await rename(partial, path)
    return total
  } catch (err) {
    await file.close().catch(() => {})
    await rm(partial, { force: true })
    throw err
  }
}

function alignmentOf(spec: GgufSpec): number {
  const entry = spec.metadata.find(([key]) => key === 'general.alignment')
  if (entry === undefined) return GGUF_DEFAULT_ALIGNMENT
  const value = entry[1].value
  if (typeof value !== 'number' || value <= 0 || value % 8 !== 0) {
    throw new GgufError('ERR_GGUF_ALIGNMENT', `general.alignment must be a positive multiple of 8`)
  }
  return value
}

function encodeHeader(spec: GgufSpec, alignment: number): Buffer {
  const out = new ByteWriter()
  out.u32(GGUF_MAGIC).u32(GGUF_VERSION).u64(spec.tensors.length).u64(spec.metadata.length)
  for (const [key, value] of spec.metadata) {
    out.string(key)
    writeValue(out, value)
  }
  let offset = 0
  for (const tensor of spec.tensors) {
    out.string(tensor.name).u32(tensor.dims.length)
    for (const dim of tensor.dims) out.u64(dim)
    out.u32(tensor.type).u64(offset)
    offset = alignUp(offset + tensorByteSize(tensor.type, tensor.dims), alignment)
  }
  return out.finish()
}

function writeValue(out: ByteWriter, typed: GgufTypedValue): void {
  out.u32(GgufValueType[typed.type])
  if (typed.type === 'array') {
    out.u32(GgufValueType[typed.itemType]).u64(typed.value.length)
    for (const item of typed.value) out.scalar(typed.itemType, item)
  } else {
    out.scalar(typed.type, typed.value)
  }
}

/** A growable little-endian byte buffer for the header. */
class ByteWriter {
  private bytes = Buffer.alloc(64 * 1024)
  private length = 0

  private room(n: number): number {
    if (this.length + n > this.bytes.length) {
      const bigger = Buffer.alloc(Math.max(this.bytes.length * 2, this.length + n))
      this.bytes.copy(bigger, 0, 0, this.length)
      this.bytes = bigger
    }
    const at = this.length
    this.length += n
    return at
  }

  u32(value: number): this {
    this.bytes.writeUInt32LE(value, this.room(4))
    return this
  }

  u64(value: number | bigint): this {
    this.bytes.writeBigUInt64LE(BigInt(value), this.room(8))
    return this
  }

  string(value: string): this {
    const encoded = Buffer.from(value, 'utf8')
    this.u64(encoded.length)
    encoded.copy(this.bytes, this.room(encoded.length))
    return this
  }

  scalar(
    type: Exclude<keyof typeof GgufValueType, 'array'>,
    value: number | bigint | boolean | string
  ): this {
    const b = this.bytes
    switch (type) {
      case 'u8':
        b.writeUInt8(Number(value), this.room(1))
        break
      case 'i8':
        b.writeInt8(Number(value), this.room(1))
        break
      case 'u16':
        b.writeUInt16LE(Number(value), this.room(2))
        break
      case 'i16':
        b.writeInt16LE(Number(value), this.room(2))
        break
      case 'u32':
        b.writeUInt32LE(Number(value), this.room(4))
        break
      case 'i32':
        b.writeInt32LE(Number(value), this.room(4))
        break
      case 'f32':
        b.writeFloatLE(Number(value), this.room(4))
        break
      case 'bool':
        b.writeUInt8(value === true ? 1 : 0, this.room(1))
        break
      case 'string':
        this.string(String(value))
        break
      case 'u64':
        b.writeBigUInt64LE(BigInt(value), this.room(8))
        break
      case 'i64':
        b.writeBigInt64LE(BigInt(value), this.room(8))
        break
      case 'f64':
        b.writeDoubleLE(Number(value), this.room(8))
        break
    }
    return this
  }

  finish(): Buffer {
    return this.bytes.subarray(0, this.length)
  }
}
