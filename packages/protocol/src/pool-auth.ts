import { z } from 'zod'
import { PoolName } from './pool.ts'
import { PeerIdString, SafeId, SafeUint } from './primitives.ts'

/** A signed document travels as `<kind>:<base64url of {"p": payload JSON, "s": signature}>`. */
export const MAX_SIGNED_BYTES = 8192

const Millis = SafeUint

/** What an invite says: join this pool, owned by this key, meet it through these peers. */
export const InvitePayload = z.object({
  v: z.literal(1),
  type: z.literal('invite'),
  pool: PoolName,
  /** The pool owner's public key, as a peer id: it signs invites, credentials and revocations. */
  owner: PeerIdString,
  bootstrap: z.array(z.string().max(512)).max(16),
  expires: Millis,
  /** `open`: any worker with the pool's name is used; `invite`: only workers holding a valid invite. */
  admission: z.enum(['open', 'invite'])
})
export type InvitePayload = z.infer<typeof InvitePayload>

/** The owner's word that this orchestrator may act for the pool until `expires`. */
export const CredentialPayload = z.object({
  v: z.literal(1),
  type: z.literal('orchestrator'),
  pool: PoolName,
  owner: PeerIdString,
  subject: PeerIdString,
  serial: SafeId,
  issued: Millis,
  expires: Millis
})
export type CredentialPayload = z.infer<typeof CredentialPayload>

/** Credentials the owner has withdrawn; the newest list (by `issued`) wins. */
export const RevocationPayload = z.object({
  v: z.literal(1),
  type: z.literal('revocations'),
  pool: PoolName,
  owner: PeerIdString,
  serials: z.array(z.number().int().positive()).max(10_000),
  issued: Millis
})
export type RevocationPayload = z.infer<typeof RevocationPayload>

export const SIGNED_PREFIX = {
  invite: 'fm-invite',
  credential: 'fm-cred',
  revocations: 'fm-revoked'
} as const

/** Why an agent refuses a lease (shown to the orchestrator that asked). */
export const RefusalReason = z.enum([
  'unknown-pool',
  'agent-leaving',
  'protocol',
  'no-credential',
  'bad-credential',
  'wrong-owner',
  'wrong-subject',
  'expired',
  'revoked',
  'rate-limited'
])
export type RefusalReason = z.infer<typeof RefusalReason>

export const MAX_POOL_UPDATE_BYTES = MAX_SIGNED_BYTES * 3

/** Orchestrator to worker on `/frankenstein/pool-update/1.0.0`: the owner's newest revocation list. */
export const PoolUpdate = z.object({
  type: z.literal('pool-update'),
  version: z.literal(1),
  revocations: z.string().max(MAX_SIGNED_BYTES * 2)
})
export type PoolUpdate = z.infer<typeof PoolUpdate>

export const PoolUpdateAck = z.object({ type: z.literal('pool-update-ack'), version: z.literal(1) })
