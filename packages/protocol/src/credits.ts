import { z } from 'zod'
import { PoolName } from './pool.ts'
import { PeerIdString, SafeId, SafeUint } from './primitives.ts'

const Millis = SafeUint
const Amount = z.number().nonnegative().max(1e15)

/**
 * What a lease used of a worker, counted on the RPC streams it carried (both ends count the same
 * frames): memory held over time, compute time, bytes loaded. Cumulative since the lease began.
 */
export const Figures = z.object({
  /** Buffer bytes held (ALLOC_BUFFER minus FREE_BUFFER) integrated over time, in GiB-seconds. */
  memoryGiBs: Amount,
  /** From each GRAPH_COMPUTE/RECOMPUTE until the next reply: the worker computing. */
  computeMs: Amount,
  /** Bytes carried by SET_TENSOR: weights at load, inputs per token. */
  loadedBytes: Amount,
  computes: Amount
})
export type Figures = z.infer<typeof Figures>

/** A worker's claim for one period of a lease; `credit` is the formula applied to `delta`. */
export const Receipt = z.object({
  v: z.literal(1),
  type: z.literal('receipt'),
  pool: PoolName,
  lease: SafeId,
  /** 0, 1, 2...: the periods of one lease, each receipt covering the time since the last. */
  seq: z.number().int().nonnegative().max(1_000_000),
  worker: PeerIdString,
  orchestrator: PeerIdString,
  from: Millis,
  to: Millis,
  /** Totals since the lease began, as of `to`: what the orchestrator checks against its own. */
  total: Figures,
  /** This period's share: total minus the previous receipt's total. */
  delta: Figures,
  credit: Amount
})
export type Receipt = z.infer<typeof Receipt>

/** A receipt travels and is stored as the exact JSON text both sides signed. */
export const MAX_RECEIPT_BYTES = 4096

/** Credit spent on the pool's API: tokens processed for an identity's requests, signed by the orchestrator. */
export const Spend = z.object({
  v: z.literal(1),
  type: z.literal('spend'),
  pool: PoolName,
  identity: PeerIdString,
  orchestrator: PeerIdString,
  tokens: z.number().int().nonnegative().max(1e12),
  credit: Amount,
  at: Millis,
  /** Unique per request, so two equal charges are two entries. */
  id: z.string().min(1).max(64)
})
export type Spend = z.infer<typeof Spend>

/** What an API key says: this identity's requests to this pool, until `expires`. Signed by the identity. */
export const ApiKeyPayload = z.object({
  v: z.literal(1),
  type: z.literal('api-key'),
  identity: PeerIdString,
  pool: PoolName,
  expires: Millis
})
export type ApiKeyPayload = z.infer<typeof ApiKeyPayload>
export const MAX_API_KEY_BYTES = 1024
