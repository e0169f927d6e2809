import {
  GGML_MAX_SRC,
  GGML_TYPES,
  REQUEST_HEADER_SIZE,
  RPC_TENSOR_SIZE,
  RpcCommand,
  TensorField,
  commandName
} from '@frankenstein-mesh/llama'
import { RpcIsolationError } from './errors.ts'
import { GGML_OPS, GGML_OP_COUNT, requiredSources } from './ggml-ops.ts'

/** One server buffer: where its bytes start in rpc-server's memory, and how many there are. */
export interface BufferRange {
  readonly base: bigint
  readonly size: bigint
}

/** What a session may touch: the devices of the rpc-server and its own buffers, by remote pointer. */
export interface SessionScope {
  readonly deviceCount: number
  readonly buffers: ReadonlyMap<bigint, BufferRange>
}

/** What a checked command touches: the multiplexer keys graph restores and frees on it. */
export interface CheckedCommand {
  readonly device: number | undefined
  readonly buffers: ReadonlySet<bigint>
}

const T = RPC_TENSOR_SIZE
const P = REQUEST_HEADER_SIZE

/** A tensor as far as bounds go: its buffer, its first byte and `ggml_nbytes` (exact, never wrapping). */
interface TensorSpan {
  readonly id: bigint
  readonly buffer: bigint
  readonly data: bigint
  readonly bytes: bigint
}

function fail(code: string, message: string): never {
  throw new RpcIsolationError(code, message)
}

/** `ggml_nbytes` in exact arithmetic: ggml's size_t sum can wrap, ours cannot. */
export function tensorBytes(type: number, ne: readonly number[], nb: readonly number[]): bigint | undefined {
  const info = GGML_TYPES.get(type)
  if (info === undefined) return undefined
  if (ne.some((n) => n <= 0)) return 0n
  const first =
    info.block === 1 ? BigInt(info.bytes) : (BigInt(ne[0] ?? 0) * BigInt(nb[0] ?? 0)) / BigInt(info.block)
  const from = info.block === 1 ? 0 : 1
  let bytes = first
  for (let i = from; i < 4; i++) bytes += BigInt((ne[i] ?? 1) - 1) * BigInt(nb[i] ?? 0)
  return bytes
}

function readSpan(b: Buffer, at: number, what: string): TensorSpan {
  const type = b.readUInt32LE(at + TensorField.type)
  const u32s = (field: number): number[] => [0, 1, 2, 3].map((i) => b.readUInt32LE(at + field + 4 * i))
  const bytes = tensorBytes(type, u32s(TensorField.ne), u32s(TensorField.nb))
  if (bytes === undefined) fail('ERR_MUX_BAD_TENSOR', `${what}: tensor type ${type} does not exist`)
  return {
    id: b.readBigUInt64LE(at + TensorField.id),
    buffer: b.readBigUInt64LE(at + TensorField.buffer),
    data: b.readBigUInt64LE(at + TensorField.data),
    bytes
  }
}

/** The session's own buffer of a tensor, with the whole tensor inside it (rpc-server asserts that). */
function ownedRange(span: TensorSpan, scope: SessionScope, what: string): BufferRange {
  if (span.buffer === 0n) fail('ERR_MUX_RAW_POINTER', `${what}: a tensor without a buffer (raw pointer)`)
  const range = scope.buffers.get(span.buffer)
  if (range === undefined)
    fail('ERR_MUX_FOREIGN_BUFFER', `${what}: buffer ${hex(span.buffer)} is not the session's`)
  if (span.data === 0n || span.data < range.base || span.data + span.bytes > range.base + range.size) {
    fail(
      'ERR_MUX_OUT_OF_BOUNDS',
      `${what}: tensor at ${hex(span.data)} (${span.bytes} bytes) outside its buffer`
    )
  }
  return range
}

/** A tensor the session may name: its own buffer, in bounds. */
function ownedTensor(b: Buffer, at: number, scope: SessionScope, what: string): TensorSpan {
  const span = readSpan(b, at, what)
  ownedRange(span, scope, what)
  return span
}

/** `[data + offset, data + offset + size)` inside the tensor and inside its buffer, not empty at the end. */
function checkRegion(span: TensorSpan, range: BufferRange, offset: bigint, size: bigint, what: string): void {
  const start = span.data + offset
  const end = range.base + range.size
  if (offset + size > span.bytes || start >= end || start + size > end) {
    fail('ERR_MUX_OUT_OF_BOUNDS', `${what}: ${size} bytes at offset ${offset} outside the tensor`)
  }
}

function checkDevice(device: number, scope: SessionScope, what: string): number {
  if (device >= scope.deviceCount) fail('ERR_MUX_BAD_DEVICE', `${what}: device ${device} does not exist`)
  return device
}

function ownedBuffer(ptr: bigint, scope: SessionScope, what: string): bigint {
  if (!scope.buffers.has(ptr))
    fail('ERR_MUX_FOREIGN_BUFFER', `${what}: buffer ${hex(ptr)} is not the session's`)
  return ptr
}

function hex(n: bigint): string {
  return `0x${n.toString(16)}`
}

const none: ReadonlySet<bigint> = new Set()

/**
 * Checks one whole command (SET_TENSOR: its head; `payloadSize` tells how many weight bytes
 * follow) against the session's scope, mirroring every check rpc-server makes (so rpc-server never
 * refuses, which would close the shared connection) and adding ownership (so no session reaches
 * another's buffers or a raw pointer). Throws RpcIsolationError.
 */
export function checkCommand(
  command: RpcCommand,
  bytes: Uint8Array,
  payloadSize: number,
  scope: SessionScope
): CheckedCommand {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const what = commandName(command)
  const device = (): CheckedCommand => ({
    device: checkDevice(b.readUInt32LE(P), scope, what),
    buffers: none
  })
  const handle = (): CheckedCommand => ({
    device: undefined,
    buffers: new Set([ownedBuffer(b.readBigUInt64LE(P), scope, what)])
  })
  switch (command) {
    case RpcCommand.AllocBuffer:
    case RpcCommand.GetAlignment:
    case RpcCommand.GetMaxSize:
    case RpcCommand.GetDeviceMemory:
    case RpcCommand.GraphRecompute:
      return device()
    case RpcCommand.BufferGetBase:
    case RpcCommand.FreeBuffer:
    case RpcCommand.BufferClear:
      return handle()
    case RpcCommand.SetTensor:
      return region(b, scope, what, b.readBigUInt64LE(P + T), BigInt(payloadSize - T - 8))
    case RpcCommand.SetTensorHash:
      return region(b, scope, what, b.readBigUInt64LE(P + T), 0n)
    case RpcCommand.GetTensor:
      return region(b, scope, what, b.readBigUInt64LE(P + T), b.readBigUInt64LE(P + T + 8))
    case RpcCommand.MemsetTensor:
      return region(b, scope, what, b.readBigUInt64LE(P + T), b.readBigUInt64LE(P + T + 8))
    case RpcCommand.InitTensor:
      return { device: undefined, buffers: new Set([ownedTensor(b, P, scope, what).buffer]) }
    case RpcCommand.CopyTensor:
      return copy(b, scope, what)
    case RpcCommand.GetAllocSize:
      return allocSize(b, scope, what)
    case RpcCommand.GraphCompute:
      return checkGraph(b.subarray(P, P + payloadSize), scope)
    case RpcCommand.Hello:
    case RpcCommand.DeviceCount:
      return { device: undefined, buffers: none }
  }
}

function region(b: Buffer, scope: SessionScope, what: string, offset: bigint, size: bigint): CheckedCommand {
  const span = readSpan(b, P, what)
  checkRegion(span, ownedRange(span, scope, what), offset, size, what)
  return { device: undefined, buffers: new Set([span.buffer]) }
}

function copy(b: Buffer, scope: SessionScope, what: string): CheckedCommand {
  const src = ownedTensor(b, P, scope, `${what} source`)
  const dst = readSpan(b, P + T, `${what} destination`)
  const range = ownedRange(dst, scope, `${what} destination`)
  // rpc-server copies ggml_nbytes(src) bytes to dst->data.
  if (dst.data + src.bytes > range.base + range.size) {
    fail('ERR_MUX_OUT_OF_BOUNDS', `${what}: ${src.bytes} bytes do not fit the destination buffer`)
  }
  return { device: undefined, buffers: new Set([src.buffer, dst.buffer]) }
}

/** GET_ALLOC_SIZE is the one command where llama.cpp sends tensors without a buffer. */
function allocSize(b: Buffer, scope: SessionScope, what: string): CheckedCommand {
  const device = checkDevice(b.readUInt32LE(P), scope, what)
  const buffers = new Set<bigint>()
  for (let i = 0; i <= GGML_MAX_SRC; i++) {
    const at = P + 4 + i * T
    if (i > 0 && b.readBigUInt64LE(at + TensorField.id) === 0n) continue
    const span = readSpan(b, at, what)
    if (span.buffer === 0n) continue
    ownedRange(span, scope, what)
    buffers.add(span.buffer)
  }
  return { device, buffers }
}

/** The largest GRAPH_COMPUTE a gate or the multiplexer takes by default: each holds one whole to check it. */
export const MAX_GRAPH_BYTES = 64 * 1024 ** 2

/**
 * How much of a GRAPH_COMPUTE's payload a parser should hand over whole to be checked: all of
 * it, or, over `max`, nothing (the frame then comes with its fixed part only and is refused).
 */
export function graphHeadSize(payloadSize: number, max: number): number {
  return payloadSize <= max ? payloadSize : 0
}

/** Where a GRAPH_COMPUTE payload keeps its tensors: `count` records of RPC_TENSOR_SIZE from `tensorsAt`. */
export interface GraphLayout {
  readonly device: number
  readonly tensorsAt: number
  readonly count: number
}

/**
 * GRAPH_COMPUTE: `device u32 | n_nodes u32 | node ids u64[n] | n_tensors u32 | rpc_tensor[n]`.
 * What needs no knowledge of buffers: the sizes add up, every op is known, every node, source and
 * view source names a tensor of the graph, and each node names the sources its op reads (rpc-server
 * dereferences them unchecked: GGML_OP_ADD without `src[1]` is a SIGSEGV at the pinned commit).
 * The exclusive gate checks this much; the multiplexer also checks ownership (checkGraph).
 */
export function checkGraphStructure(payload: Uint8Array): GraphLayout {
  const what = 'GRAPH_COMPUTE'
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  if (b.length < 12) fail('ERR_MUX_BAD_GRAPH', `${what}: ${b.length} bytes is too short`)
  const nodes = b.readUInt32LE(4)
  const tensorsAt = 8 + nodes * 8 + 4
  if (b.length < tensorsAt) fail('ERR_MUX_BAD_GRAPH', `${what}: ${nodes} nodes do not fit ${b.length} bytes`)
  const count = b.readUInt32LE(tensorsAt - 4)
  if (b.length !== tensorsAt + count * T) {
    fail('ERR_MUX_BAD_GRAPH', `${what}: ${count} tensors do not match ${b.length} bytes`)
  }
  const ids = new Set<bigint>()
  for (let i = 0; i < count; i++) {
    const at = tensorsAt + i * T
    const op = b.readUInt32LE(at + TensorField.op)
    if (op >= GGML_OP_COUNT) fail('ERR_MUX_BAD_GRAPH', `${what}: op ${op} does not exist`)
    ids.add(b.readBigUInt64LE(at + TensorField.id))
  }
  const known = (id: bigint, role: string): void => {
    if (id !== 0n && !ids.has(id)) fail('ERR_MUX_BAD_GRAPH', `${what}: ${role} ${id} is not in the graph`)
  }
  for (let i = 0; i < nodes; i++) known(b.readBigUInt64LE(8 + i * 8), 'node')
  for (let i = 0; i < count; i++) {
    const at = tensorsAt + i * T
    const op = b.readUInt32LE(at + TensorField.op)
    const needed = requiredSources(op)
    for (let s = 0; s < GGML_MAX_SRC; s++) {
      const src = b.readBigUInt64LE(at + TensorField.src + 8 * s)
      if (src === 0n && s < needed) {
        fail(
          'ERR_MUX_BAD_GRAPH',
          `${what}: GGML_OP_${GGML_OPS[op] ?? '?'} needs ${needed} sources, source ${s} is missing`
        )
      }
      known(src, 'source')
    }
    known(b.readBigUInt64LE(at + TensorField.viewSrc), 'view source')
  }
  return { device: b.readUInt32LE(0), tensorsAt, count }
}

/** GRAPH_COMPUTE in a multiplexed session: its structure, and every tensor in the session's own buffers and in bounds. */
export function checkGraph(payload: Uint8Array, scope: SessionScope): CheckedCommand {
  const what = 'GRAPH_COMPUTE'
  const layout = checkGraphStructure(payload)
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  const device = checkDevice(layout.device, scope, what)
  const buffers = new Set<bigint>()
  for (let i = 0; i < layout.count; i++) {
    buffers.add(ownedTensor(b, layout.tensorsAt + i * T, scope, `${what} tensor ${i}`).buffer)
  }
  return { device, buffers }
}
