import { z } from 'zod'
import { MAX_RECEIPT_BYTES } from './credits.ts'
import { MAX_SIGNED_BYTES, RefusalReason } from './pool-auth.ts'
import { PoolName } from './pool.ts'
import { SafeId, SafeUint } from './primitives.ts'

/** Bytes a lease message may take on the wire: checked before it is parsed. */
export const MAX_LEASE_MESSAGE_BYTES = 2048 + Math.max(MAX_SIGNED_BYTES, MAX_RECEIPT_BYTES)

const Signature = z.string().max(200)
const ReceiptSeq = z.number().int().nonnegative().max(1_000_000)

const Millis = SafeUint
const LeaseId = SafeId

export const LeaseSharing = z.enum(['exclusive', 'concurrent'])
export type LeaseSharing = z.infer<typeof LeaseSharing>

export const LeaseInfo = z.object({
  id: LeaseId,
  pool: PoolName,
  grantedAt: Millis,
  /** Renew at least this often, or the lease ends. */
  ttlMs: Millis,
  /** The holder keeps the worker at least this long once granted (unless it releases). */
  minSliceMs: Millis,
  /**
   * How the worker is shared (absent from agents before issue 8: exclusive). `exclusive`: this
   * lease holds the whole rpc-server for a time slice; `concurrent`: other pools' leases run
   * beside it at the same time, each within its memory quota.
   */
  sharing: LeaseSharing.optional(),
  /** With concurrent sharing: the buffer bytes this pool may hold in rpc-server. */
  quotaBytes: SafeUint.optional()
})
export type LeaseInfo = z.infer<typeof LeaseInfo>

/** Orchestrator to agent, on one `/frankenstein/lease/1.0.0` stream per lease session. */
export const OrchestratorLeaseMessage = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('request'),
    version: z.literal(1),
    pool: PoolName,
    /** `fm-cred:...`: the pool owner's signed word that the requester may act for the pool. */
    credential: z.string().max(MAX_SIGNED_BYTES).optional(),
    /**
     * Bytes the pool's plan places on this worker (weights and KV cache): lets the agent tell
     * whether the pools it serves fit in its memory together. Optional (older orchestrators).
     */
    memory: SafeUint.optional()
  }),
  z.object({ type: z.literal('renew'), version: z.literal(1), leaseId: LeaseId }),
  z.object({ type: z.literal('release'), version: z.literal(1), leaseId: LeaseId }),
  /** The worker's receipt `seq` countersigned: recorded in the orchestrator's ledger first. */
  z.object({
    type: z.literal('receipt-signed'),
    version: z.literal(1),
    seq: ReceiptSeq,
    signature: Signature
  }),
  /** Not countersigned: the figures are out of tolerance of the orchestrator's own, or wrong. */
  z.object({
    type: z.literal('receipt-disputed'),
    version: z.literal(1),
    seq: ReceiptSeq,
    reason: z.string().max(500)
  })
])
export type OrchestratorLeaseMessage = z.infer<typeof OrchestratorLeaseMessage>

export const LeaseEndReason = z.enum([
  'released',
  'grace-expired',
  'lease-expired',
  'rpc-server-lost',
  'agent-leaving',
  /** The owner withdrew the holder's credential. */
  'revoked'
])
export type LeaseEndReason = z.infer<typeof LeaseEndReason>

/** Agent to orchestrator. */
export const AgentLeaseMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('granted'), version: z.literal(1), lease: LeaseInfo }),
  /** Not now: another pool holds the worker, expected free around `freeAt` (epoch ms). Keep the stream open to wait in line. */
  z.object({ type: z.literal('busy'), version: z.literal(1), holder: PoolName, freeAt: Millis }),
  z.object({
    type: z.literal('refused'),
    version: z.literal(1),
    reason: RefusalReason
  }),
  /** Yield by `revokeBy` (epoch ms): drain, release; the agent closes the RPC streams then. */
  z.object({ type: z.literal('revoke'), version: z.literal(1), leaseId: LeaseId, revokeBy: Millis }),
  z.object({ type: z.literal('ended'), version: z.literal(1), leaseId: LeaseId, reason: LeaseEndReason }),
  /** rpc-server died (every session on it is gone) or is back. */
  z.object({ type: z.literal('rpc-server'), version: z.literal(1), state: z.enum(['lost', 'restored']) }),
  /** A period of the lease, measured and signed by the worker, for the orchestrator to countersign. */
  z.object({
    type: z.literal('receipt'),
    version: z.literal(1),
    receipt: z.string().max(MAX_RECEIPT_BYTES),
    signature: Signature
  })
])
export type AgentLeaseMessage = z.infer<typeof AgentLeaseMessage>
