import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  GGML_MAX_SRC,
  RPC_TENSOR_SIZE,
  RpcCommand,
  TensorField,
  encodeRequest,
  encodeTensor,
  type RpcTensor
} from '@frankenstein-mesh/llama'
import {
  GGML_OPS,
  RpcIsolationError,
  checkCommand,
  requiredSources,
  tensorBytes,
  type SessionScope
} from '../src/index.ts'

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n)
  return b
}
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt.asUintN(64, n))
  return b
}

const OWN = 0x5000n
const OTHER = 0x9000n
const BASE = 0x7f00_0000_0000n
const SIZE = 4096n
/** The session owns one 4 KiB buffer; another session's buffer exists upstream but is not in scope. */
const scope: SessionScope = { deviceCount: 1, buffers: new Map([[OWN, { base: BASE, size: SIZE }]]) }

/** An F32 vector of `n` floats at `data`, in the session's buffer unless told otherwise. */
function f32(
  data: bigint,
  n: number,
  extra: Partial<RpcTensor> & { op?: number; src?: bigint[] } = {}
): Buffer {
  const bytes = encodeTensor({
    buffer: OWN,
    data,
    type: 0,
    ne: [n, 1, 1, 1],
    nb: [4, 4 * n, 4 * n, 4 * n],
    ...extra
  })
  if (extra.op !== undefined) bytes.writeUInt32LE(extra.op, TensorField.op)
  extra.src?.forEach((id, i) => bytes.writeBigUInt64LE(id, TensorField.src + 8 * i))
  return bytes
}

function check(frame: Buffer): ReturnType<typeof checkCommand> {
  return checkCommand(frame[0] as RpcCommand, frame, Number(frame.readBigUInt64LE(1)), scope)
}

function refused(frame: Buffer, code: string): void {
  assert.throws(
    () => check(frame),
    (err: unknown) => err instanceof RpcIsolationError && err.code === code,
    `expected ${code}`
  )
}

function graph(nodes: bigint[], tensors: Buffer[], device = 0): Buffer {
  return encodeRequest(
    RpcCommand.GraphCompute,
    Buffer.concat([u32(device), u32(nodes.length), ...nodes.map(u64), u32(tensors.length), ...tensors])
  )
}

const set = (tensor: Buffer, offset: bigint, n: number): Buffer =>
  encodeRequest(RpcCommand.SetTensor, Buffer.concat([tensor, u64(offset), Buffer.alloc(n)]))
const get = (tensor: Buffer, offset: bigint, size: bigint): Buffer =>
  encodeRequest(RpcCommand.GetTensor, Buffer.concat([tensor, u64(offset), u64(size)]))

describe('RPC isolation checks', () => {
  it('lets a session use its own buffer within bounds', () => {
    assert.deepEqual([...check(set(f32(BASE, 16), 0n, 64)).buffers], [OWN])
    check(set(f32(BASE + 4032n, 16), 0n, 64))
    check(get(f32(BASE, 1024), 4000n, 96n))
    check(encodeRequest(RpcCommand.CopyTensor, Buffer.concat([f32(BASE, 16), f32(BASE + 64n, 16)])))
    check(encodeRequest(RpcCommand.InitTensor, f32(BASE, 16)))
    check(
      encodeRequest(
        RpcCommand.MemsetTensor,
        Buffer.concat([f32(BASE, 16), u64(8n), u64(56n), Buffer.from([1])])
      )
    )
    check(encodeRequest(RpcCommand.SetTensorHash, Buffer.concat([f32(BASE, 16), u64(0n), u64(7n)])))
    for (const command of [RpcCommand.BufferGetBase, RpcCommand.FreeBuffer])
      check(encodeRequest(command, u64(OWN)))
    check(encodeRequest(RpcCommand.BufferClear, Buffer.concat([u64(OWN), Buffer.from([0])])))
    assert.equal(
      check(encodeRequest(RpcCommand.AllocBuffer, Buffer.concat([u32(0), u64(1n << 20n)]))).device,
      0
    )
  })

  it("refuses another session's buffer in every command that names one", () => {
    const theirs = f32(BASE, 16, { buffer: OTHER })
    refused(set(theirs, 0n, 16), 'ERR_MUX_FOREIGN_BUFFER')
    refused(get(theirs, 0n, 16n), 'ERR_MUX_FOREIGN_BUFFER')
    refused(
      encodeRequest(RpcCommand.SetTensorHash, Buffer.concat([theirs, u64(0n), u64(1n)])),
      'ERR_MUX_FOREIGN_BUFFER'
    )
    refused(encodeRequest(RpcCommand.InitTensor, theirs), 'ERR_MUX_FOREIGN_BUFFER')
    refused(
      encodeRequest(RpcCommand.CopyTensor, Buffer.concat([theirs, f32(BASE, 16)])),
      'ERR_MUX_FOREIGN_BUFFER'
    )
    refused(
      encodeRequest(RpcCommand.CopyTensor, Buffer.concat([f32(BASE, 16), theirs])),
      'ERR_MUX_FOREIGN_BUFFER'
    )
    refused(
      encodeRequest(RpcCommand.MemsetTensor, Buffer.concat([theirs, u64(0n), u64(4n), Buffer.from([0])])),
      'ERR_MUX_FOREIGN_BUFFER'
    )
    for (const command of [RpcCommand.BufferGetBase, RpcCommand.FreeBuffer])
      refused(encodeRequest(command, u64(OTHER)), 'ERR_MUX_FOREIGN_BUFFER')
    refused(
      encodeRequest(RpcCommand.BufferClear, Buffer.concat([u64(OTHER), Buffer.from([0])])),
      'ERR_MUX_FOREIGN_BUFFER'
    )
  })

  it('refuses tensors without a buffer, whose data would be a raw pointer', () => {
    const raw = f32(BASE, 16, { buffer: 0n })
    refused(set(raw, 0n, 16), 'ERR_MUX_RAW_POINTER')
    refused(get(raw, 0n, 16n), 'ERR_MUX_RAW_POINTER')
    refused(graph([1n], [f32(BASE, 4, { id: 1n, buffer: 0n })]), 'ERR_MUX_RAW_POINTER')
  })

  it('refuses reaching outside the tensor or the buffer, also where sums wrap', () => {
    refused(set(f32(BASE - 4n, 16), 0n, 16), 'ERR_MUX_OUT_OF_BOUNDS')
    refused(set(f32(BASE + SIZE - 4n, 16), 0n, 16), 'ERR_MUX_OUT_OF_BOUNDS')
    refused(set(f32(BASE, 16), 60n, 8), 'ERR_MUX_OUT_OF_BOUNDS')
    refused(set(f32(BASE, 16), 2n ** 64n - 8n, 16), 'ERR_MUX_OUT_OF_BOUNDS')
    refused(set(f32(2n ** 64n - 16n, 16), 0n, 16), 'ERR_MUX_OUT_OF_BOUNDS')
    refused(set(f32(BASE + SIZE - 64n, 16), 64n, 0), 'ERR_MUX_OUT_OF_BOUNDS')
    refused(get(f32(BASE, 1024), 4090n, 64n), 'ERR_MUX_OUT_OF_BOUNDS')
    refused(get(f32(BASE, 16), 2n ** 64n - 1n, 16n), 'ERR_MUX_OUT_OF_BOUNDS')
    refused(
      encodeRequest(RpcCommand.CopyTensor, Buffer.concat([f32(BASE, 1024), f32(BASE + SIZE - 16n, 4)])),
      'ERR_MUX_OUT_OF_BOUNDS'
    )
    refused(
      encodeRequest(
        RpcCommand.MemsetTensor,
        Buffer.concat([f32(BASE, 16), u64(SIZE - 4n), u64(4096n), Buffer.from([0])])
      ),
      'ERR_MUX_OUT_OF_BOUNDS'
    )
    const huge = encodeTensor({
      id: 1n,
      buffer: OWN,
      data: BASE,
      ne: [0x7fffffff, 0x7fffffff, 1, 1],
      nb: [4, 4, 4, 4]
    })
    refused(graph([1n], [Buffer.from(huge)]), 'ERR_MUX_OUT_OF_BOUNDS')
  })

  it('refuses devices and types that do not exist', () => {
    refused(encodeRequest(RpcCommand.GetDeviceMemory, u32(1)), 'ERR_MUX_BAD_DEVICE')
    refused(encodeRequest(RpcCommand.AllocBuffer, Buffer.concat([u32(7), u64(16n)])), 'ERR_MUX_BAD_DEVICE')
    refused(encodeRequest(RpcCommand.GraphRecompute, u32(9)), 'ERR_MUX_BAD_DEVICE')
    refused(set(f32(BASE, 16, { type: 9999 }), 0n, 16), 'ERR_MUX_BAD_TENSOR')
    refused(set(f32(BASE, 16, { type: 4 }), 0n, 16), 'ERR_MUX_BAD_TENSOR')
  })

  it('allows GET_ALLOC_SIZE of a tensor without a buffer, as llama.cpp sends it', () => {
    const noBuffer = encodeTensor({ type: 0, ne: [16, 1, 1, 1], nb: [4, 64, 64, 64] })
    const payload = Buffer.concat([u32(0), noBuffer, Buffer.alloc(RPC_TENSOR_SIZE * GGML_MAX_SRC)])
    assert.equal(check(encodeRequest(RpcCommand.GetAllocSize, payload)).device, 0)
    const foreign = Buffer.concat([
      u32(0),
      f32(BASE, 16, { buffer: OTHER }),
      Buffer.alloc(RPC_TENSOR_SIZE * GGML_MAX_SRC)
    ])
    refused(encodeRequest(RpcCommand.GetAllocSize, foreign), 'ERR_MUX_FOREIGN_BUFFER')
  })

  it('checks every tensor of a graph, its sources and its nodes', () => {
    const a = f32(BASE, 16, { id: 1n })
    const b = f32(BASE + 64n, 16, { id: 2n, op: 2, src: [1n, 1n] })
    const ok = check(graph([2n], [a, b]))
    assert.equal(ok.device, 0)
    assert.deepEqual([...ok.buffers], [OWN])
    refused(
      graph([2n], [a, f32(BASE + 64n, 16, { id: 2n, op: 2, src: [1n, 1n], buffer: OTHER })]),
      'ERR_MUX_FOREIGN_BUFFER'
    )
    refused(graph([2n], [a, f32(BASE + 64n, 16, { id: 2n, op: 2, src: [1n, 77n] })]), 'ERR_MUX_BAD_GRAPH')
    refused(graph([42n], [a]), 'ERR_MUX_BAD_GRAPH')
    refused(graph([1n], [f32(BASE, 4, { id: 1n, op: 9999 })]), 'ERR_MUX_BAD_GRAPH')
    refused(graph([1n], [a], 3), 'ERR_MUX_BAD_DEVICE')
    const claimsMore = graph([1n], [a])
    claimsMore.writeUInt32LE(0xffffffff, 9 + 4)
    refused(claimsMore, 'ERR_MUX_BAD_GRAPH')
    refused(Buffer.concat([graph([1n], [a]), Buffer.alloc(8)]).fill(0, 1, 9), 'ERR_MUX_BAD_GRAPH')
  })

  it('refuses a node that lacks the sources its op reads (rpc-server would dereference null)', () => {
    const a = f32(BASE, 16, { id: 1n })
    // GGML_OP_ADD (2) reads two sources, GGML_OP_MUL_MAT (29) two, GGML_OP_SCALE (32) one.
    refused(graph([2n], [a, f32(BASE + 64n, 16, { id: 2n, op: 2 })]), 'ERR_MUX_BAD_GRAPH')
    refused(graph([2n], [a, f32(BASE + 64n, 16, { id: 2n, op: 2, src: [1n] })]), 'ERR_MUX_BAD_GRAPH')
    refused(graph([2n], [a, f32(BASE + 64n, 16, { id: 2n, op: 29, src: [0n, 1n] })]), 'ERR_MUX_BAD_GRAPH')
    check(graph([2n], [a, f32(BASE + 64n, 16, { id: 2n, op: 29, src: [1n, 1n] })]))
    check(graph([2n], [a, f32(BASE + 64n, 16, { id: 2n, op: 32, src: [1n] })]))
    assert.equal(GGML_OPS[29], 'MUL_MAT')
    assert.equal(requiredSources(0), 0, 'a leaf has no sources')
  })

  it('measures tensors as ggml_nbytes does, for plain and block types', () => {
    assert.equal(tensorBytes(0, [16, 2, 1, 1], [4, 64, 128, 128]), 128n)
    // Q4_0: blocks of 32 elements in 18 bytes.
    assert.equal(tensorBytes(2, [64, 3, 1, 1], [18, 36, 108, 108]), 108n)
    assert.equal(tensorBytes(0, [0, 5, 1, 1], [4, 4, 4, 4]), 0n)
    assert.equal(tensorBytes(4, [1, 1, 1, 1], [1, 1, 1, 1]), undefined)
  })
})
