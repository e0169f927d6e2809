import { RESPONSE_HEADER_SIZE } from '@frankenstein-mesh/llama'

/**
 * A GET_DEVICE_MEMORY reply (`u64 size | free | total`) as a pool with a quota sees the device:
 * the quota as total, what the pool has left of it as free, never more than the device has.
 * Rewritten in place.
 */
export function deviceMemoryWithin(reply: Uint8Array, quota: number | undefined, used: number): Uint8Array {
  if (quota === undefined) return reply
  const view = Buffer.from(reply.buffer, reply.byteOffset, reply.byteLength)
  const free = view.readBigUInt64LE(RESPONSE_HEADER_SIZE)
  const total = view.readBigUInt64LE(RESPONSE_HEADER_SIZE + 8)
  const left = BigInt(Math.max(0, quota - used))
  view.writeBigUInt64LE(free < left ? free : left, RESPONSE_HEADER_SIZE)
  view.writeBigUInt64LE(total < BigInt(quota) ? total : BigInt(quota), RESPONSE_HEADER_SIZE + 8)
  return reply
}
