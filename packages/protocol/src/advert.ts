import { z } from 'zod'
import { PoolName } from './pool.ts'
import { SafeUint } from './primitives.ts'

/** Bytes an advert may take on the wire: checked before it is parsed. */
export const MAX_ADVERT_BYTES = 8192

const Bytes = SafeUint

/** What a worker offers, as its agent tells orchestrators. */
export const WorkerAdvert = z.object({
  type: z.literal('advert'),
  version: z.literal(1),
  /** Pools this worker serves. */
  pools: z.array(PoolName).min(1).max(32),
  /** Memory the contributor lends to pools, and how much of it is free right now. */
  memory: z.object({ offered: Bytes, free: Bytes }),
  accelerator: z.enum(['cpu', 'cuda', 'metal']),
  /** RPC protocol of the worker's rpc-server, as it answered HELLO. */
  rpcProtocol: z.string().regex(/^\d{1,3}\.\d{1,3}\.\d{1,3}$/),
  lease: z.object({
    state: z.enum(['idle', 'leased']),
    pool: PoolName.optional(),
    /** Epoch milliseconds when the current holder's slice is expected to end. */
    until: z.number().int().nonnegative().optional()
  }),
  /** Epoch milliseconds when the advert was made. */
  at: z.number().int().nonnegative(),
  /**
   * How the worker joined the pool asked about: the owner key it takes the pool's word from, and
   * the owner-signed invite it joined with (what an orchestrator admits it on).
   */
  membership: z
    .object({ owner: z.string().max(100).optional(), invite: z.string().max(3_000).optional() })
    .default({})
})

export type WorkerAdvert = z.infer<typeof WorkerAdvert>

export const AdvertRequest = z.object({
  type: z.literal('advert-request'),
  version: z.literal(1),
  pool: PoolName
})
export type AdvertRequest = z.infer<typeof AdvertRequest>
