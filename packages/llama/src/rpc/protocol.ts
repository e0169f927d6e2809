/**
 * The llama.cpp RPC wire protocol, version 6.0.0 (ggml/src/ggml-rpc/ggml-rpc.cpp).
 *
 * Client to server: `u8 command | u64 payload size (LE) | payload`.
 * Server to client: `u64 size (LE) | payload`, only for commands that have a response, in order.
 */

export const RPC_PROTOCOL_VERSION = { major: 6, minor: 0, patch: 0 } as const

export const RpcCommand = {
  AllocBuffer: 0,
  GetAlignment: 1,
  GetMaxSize: 2,
  BufferGetBase: 3,
  FreeBuffer: 4,
  BufferClear: 5,
  SetTensor: 6,
  SetTensorHash: 7,
  GetTensor: 8,
  CopyTensor: 9,
  GraphCompute: 10,
  GetDeviceMemory: 11,
  InitTensor: 12,
  GetAllocSize: 13,
  Hello: 14,
  DeviceCount: 15,
  GraphRecompute: 16,
  MemsetTensor: 17
} as const

export type RpcCommand = (typeof RpcCommand)[keyof typeof RpcCommand]

/** Size of the packed `rpc_tensor` struct. */
export const RPC_TENSOR_SIZE = 296
/** `GGML_MAX_SRC`: GET_ALLOC_SIZE carries a tensor and this many sources. */
export const GGML_MAX_SRC = 10
/** Transport capabilities in HELLO (RDMA negotiation); anything in the middle zeroes them. */
export const CONN_CAPS_SIZE = 24
export const REQUEST_HEADER_SIZE = 9
export const RESPONSE_HEADER_SIZE = 8

/** Offsets inside an `rpc_tensor`. */
export const TensorField = {
  id: 0,
  type: 8,
  buffer: 12,
  ne: 20,
  nb: 36,
  op: 52,
  opParams: 56,
  flags: 120,
  src: 124,
  viewSrc: 204,
  viewOffs: 212,
  data: 220,
  name: 228,
  useCount: 292
} as const

/**
 * How a command's payload is shaped. `request`: exact size, or the minimum for variable-size
 * commands. `response`: exact size, `'echo'` when it equals the request's `size` field
 * (GET_TENSOR), or null when the command has no response.
 */
export interface CommandSpec {
  readonly name: string
  readonly request: number
  readonly variable: boolean
  readonly response: number | 'echo' | null
}

const T = RPC_TENSOR_SIZE

export const COMMAND_SPECS: readonly CommandSpec[] = [
  { name: 'ALLOC_BUFFER', request: 12, variable: false, response: 16 },
  { name: 'GET_ALIGNMENT', request: 4, variable: false, response: 8 },
  { name: 'GET_MAX_SIZE', request: 4, variable: false, response: 8 },
  { name: 'BUFFER_GET_BASE', request: 8, variable: false, response: 8 },
  { name: 'FREE_BUFFER', request: 8, variable: false, response: null },
  { name: 'BUFFER_CLEAR', request: 9, variable: false, response: null },
  { name: 'SET_TENSOR', request: T + 8, variable: true, response: null },
  { name: 'SET_TENSOR_HASH', request: T + 16, variable: false, response: 1 },
  { name: 'GET_TENSOR', request: T + 16, variable: false, response: 'echo' },
  { name: 'COPY_TENSOR', request: 2 * T, variable: false, response: 1 },
  { name: 'GRAPH_COMPUTE', request: 12, variable: true, response: null },
  { name: 'GET_DEVICE_MEMORY', request: 4, variable: false, response: 16 },
  { name: 'INIT_TENSOR', request: T, variable: false, response: null },
  { name: 'GET_ALLOC_SIZE', request: 4 + T * (1 + GGML_MAX_SRC), variable: false, response: 8 },
  { name: 'HELLO', request: CONN_CAPS_SIZE, variable: false, response: 4 + CONN_CAPS_SIZE },
  { name: 'DEVICE_COUNT', request: 0, variable: false, response: 4 },
  { name: 'GRAPH_RECOMPUTE', request: 4, variable: false, response: null },
  { name: 'MEMSET_TENSOR', request: T + 17, variable: false, response: null }
]

export const COMMAND_COUNT = COMMAND_SPECS.length

export function commandName(command: number): string {
  return COMMAND_SPECS[command]?.name ?? `UNKNOWN(${command})`
}

/** Where GET_TENSOR's requested byte count sits in its payload (after the tensor and offset). */
export const GET_TENSOR_SIZE_OFFSET = T + 8
/** SET_TENSOR's payload starts with the destination tensor and an offset; weight bytes follow. */
export const SET_TENSOR_HEAD_SIZE = T + 8
