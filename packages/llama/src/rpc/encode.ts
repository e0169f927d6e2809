import {
  REQUEST_HEADER_SIZE,
  RESPONSE_HEADER_SIZE,
  RPC_TENSOR_SIZE,
  TensorField,
  type RpcCommand
} from './protocol.ts'

/** `u8 command | u64 size | payload`: one client-to-server frame. */
export function encodeRequest(command: RpcCommand, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const frame = Buffer.alloc(REQUEST_HEADER_SIZE + payload.length)
  frame[0] = command
  frame.writeBigUInt64LE(BigInt(payload.length), 1)
  frame.set(payload, REQUEST_HEADER_SIZE)
  return frame
}

/** `u64 size | payload`: one server-to-client frame. */
export function encodeResponse(payload: Uint8Array): Buffer {
  const frame = Buffer.alloc(RESPONSE_HEADER_SIZE + payload.length)
  frame.writeBigUInt64LE(BigInt(payload.length), 0)
  frame.set(payload, RESPONSE_HEADER_SIZE)
  return frame
}

/** The fields of an `rpc_tensor` that framing and isolation checks look at. */
export interface RpcTensor {
  readonly id: bigint
  readonly type: number
  /** Server pointer of the tensor's buffer (0: none). */
  readonly buffer: bigint
  readonly ne: readonly [number, number, number, number]
  readonly nb: readonly [number, number, number, number]
  /** Server pointer of the tensor's first byte. */
  readonly data: bigint
  readonly name: string
}

export function encodeTensor(tensor: Partial<RpcTensor>): Buffer {
  const bytes = Buffer.alloc(RPC_TENSOR_SIZE)
  bytes.writeBigUInt64LE(tensor.id ?? 0n, TensorField.id)
  bytes.writeUInt32LE(tensor.type ?? 0, TensorField.type)
  bytes.writeBigUInt64LE(tensor.buffer ?? 0n, TensorField.buffer)
  ;(tensor.ne ?? [1, 1, 1, 1]).forEach((n, i) => bytes.writeUInt32LE(n, TensorField.ne + 4 * i))
  ;(tensor.nb ?? [4, 4, 4, 4]).forEach((n, i) => bytes.writeUInt32LE(n, TensorField.nb + 4 * i))
  bytes.writeBigUInt64LE(tensor.data ?? 0n, TensorField.data)
  bytes.write((tensor.name ?? '').slice(0, 63), TensorField.name, 'utf8')
  return bytes
}

export function decodeTensor(bytes: Uint8Array, offset = 0): RpcTensor {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset + offset, RPC_TENSOR_SIZE)
  const u32s = (at: number): [number, number, number, number] =>
    [0, 1, 2, 3].map((i) => b.readUInt32LE(at + 4 * i)) as [number, number, number, number]
  const nameBytes = b.subarray(TensorField.name, TensorField.name + 64)
  const end = nameBytes.indexOf(0)
  return {
    id: b.readBigUInt64LE(TensorField.id),
    type: b.readUInt32LE(TensorField.type),
    buffer: b.readBigUInt64LE(TensorField.buffer),
    ne: u32s(TensorField.ne),
    nb: u32s(TensorField.nb),
    data: b.readBigUInt64LE(TensorField.data),
    name: nameBytes.toString('utf8', 0, end === -1 ? 64 : end)
  }
}
