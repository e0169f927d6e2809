import { GgufError } from '../errors.ts'

export const GGUF_MAGIC = 0x46554747 // "GGUF", little-endian
export const GGUF_VERSION = 3
export const GGUF_DEFAULT_ALIGNMENT = 32

/** GGUF metadata value types (gguf.h `gguf_type`). */
export const GgufValueType = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12
} as const

export type GgufScalarTypeName = Exclude<keyof typeof GgufValueType, 'array'>

/** A metadata value as read: 64-bit integers past 2^53 come back as bigint. */
export type GgufValue = number | bigint | boolean | string | GgufValue[]

/** A metadata value to write, with the type it must have on disk. */
export type GgufTypedValue =
  | { readonly type: Exclude<GgufScalarTypeName, 'string' | 'bool'>; readonly value: number | bigint }
  | { readonly type: 'string'; readonly value: string }
  | { readonly type: 'bool'; readonly value: boolean }
  | { readonly type: 'array'; readonly itemType: 'string'; readonly value: readonly string[] }
  | {
      readonly type: 'array'
      readonly itemType: Exclude<GgufScalarTypeName, 'string' | 'bool'>
      readonly value: readonly number[]
    }

interface TensorType {
  readonly name: string
  /** Elements per block and bytes per block: a row of n elements takes n / block * bytes. */
  readonly block: number
  readonly bytes: number
}

/** ggml tensor types by id (ggml.h `ggml_type`), with block layouts from ggml-common.h. */
export const GGML_TYPES: ReadonlyMap<number, TensorType> = new Map([
  [0, { name: 'F32', block: 1, bytes: 4 }],
  [1, { name: 'F16', block: 1, bytes: 2 }],
  [2, { name: 'Q4_0', block: 32, bytes: 18 }],
  [3, { name: 'Q4_1', block: 32, bytes: 20 }],
  [6, { name: 'Q5_0', block: 32, bytes: 22 }],
  [7, { name: 'Q5_1', block: 32, bytes: 24 }],
  [8, { name: 'Q8_0', block: 32, bytes: 34 }],
  [9, { name: 'Q8_1', block: 32, bytes: 36 }],
  [10, { name: 'Q2_K', block: 256, bytes: 84 }],
  [11, { name: 'Q3_K', block: 256, bytes: 110 }],
  [12, { name: 'Q4_K', block: 256, bytes: 144 }],
  [13, { name: 'Q5_K', block: 256, bytes: 176 }],
  [14, { name: 'Q6_K', block: 256, bytes: 210 }],
  [15, { name: 'Q8_K', block: 256, bytes: 292 }],
  [16, { name: 'IQ2_XXS', block: 256, bytes: 66 }],
  [17, { name: 'IQ2_XS', block: 256, bytes: 74 }],
  [18, { name: 'IQ3_XXS', block: 256, bytes: 98 }],
  [19, { name: 'IQ1_S', block: 256, bytes: 50 }],
  [20, { name: 'IQ4_NL', block: 32, bytes: 18 }],
  [21, { name: 'IQ3_S', block: 256, bytes: 110 }],
  [22, { name: 'IQ2_S', block: 256, bytes: 82 }],
  [23, { name: 'IQ4_XS', block: 256, bytes: 136 }],
  [24, { name: 'I8', block: 1, bytes: 1 }],
  [25, { name: 'I16', block: 1, bytes: 2 }],
  [26, { name: 'I32', block: 1, bytes: 4 }],
  [27, { name: 'I64', block: 1, bytes: 8 }],
  [28, { name: 'F64', block: 1, bytes: 8 }],
  [29, { name: 'IQ1_M', block: 256, bytes: 56 }],
  [30, { name: 'BF16', block: 1, bytes: 2 }],
  [34, { name: 'TQ1_0', block: 256, bytes: 54 }],
  [35, { name: 'TQ2_0', block: 256, bytes: 66 }],
  [39, { name: 'MXFP4', block: 32, bytes: 17 }],
  [40, { name: 'NVFP4', block: 64, bytes: 36 }],
  [41, { name: 'Q1_0', block: 128, bytes: 18 }],
  [42, { name: 'Q2_0', block: 64, bytes: 18 }]
])

export const GgmlType = { F32: 0, F16: 1 } as const

/** Bytes a tensor of this type and shape occupies in the file (and in a backend buffer). */
export function tensorByteSize(type: number, dims: readonly number[]): number {
  const info = GGML_TYPES.get(type)
  if (info === undefined) throw new GgufError('ERR_GGUF_TENSOR_TYPE', `unknown ggml tensor type ${type}`)
  const [rowLength = 1, ...rest] = dims
  if (rowLength % info.block !== 0) {
    throw new GgufError(
      'ERR_GGUF_TENSOR_SHAPE',
      `${info.name} rows of ${rowLength} are not whole blocks of ${info.block}`
    )
  }
  const rows = rest.reduce((a, b) => a * b, 1)
  return (rowLength / info.block) * info.bytes * rows
}

export function alignUp(offset: number, alignment: number): number {
  return Math.ceil(offset / alignment) * alignment
}
