import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import {
  CredentialPayload,
  InvitePayload,
  MAX_SIGNED_BYTES,
  MessageError,
  RevocationPayload,
  SIGNED_PREFIX,
  decodeMessage,
  type RefusalReason
} from '@frankenstein-mesh/protocol'
import { z } from 'zod'
import { MeshError } from './errors.ts'

/** A signed document that failed a check: `reason` is what an agent tells the peer. */
export class PoolAuthError extends MeshError {
  override readonly name = 'PoolAuthError'
  readonly reason: RefusalReason

  constructor(reason: RefusalReason, message: string) {
    super('ERR_POOL_AUTH', message)
    this.reason = reason
  }
}

const Envelope = z.object({ p: z.string().max(MAX_SIGNED_BYTES), s: z.string().max(200) })

type Kind = keyof typeof SIGNED_PREFIX

async function sign(kind: Kind, key: PrivateKey, payload: unknown): Promise<string> {
  const p = JSON.stringify(payload)
  const s = Buffer.from(await key.sign(new TextEncoder().encode(p))).toString('base64url')
  return `${SIGNED_PREFIX[kind]}:${Buffer.from(JSON.stringify({ p, s })).toString('base64url')}`
}

/** Checks size, shape and the owner's signature; returns the payload. */
async function open<T extends z.ZodType<{ owner: string }>>(
  kind: Kind,
  text: string,
  schema: T
): Promise<z.infer<T>> {
  const prefix = `${SIGNED_PREFIX[kind]}:`
  if (text.length > MAX_SIGNED_BYTES * 2 || !text.startsWith(prefix)) {
    throw new PoolAuthError('bad-credential', `not a ${prefix} string`)
  }
  try {
    const envelope = decodeMessage(
      Envelope,
      Buffer.from(text.slice(prefix.length), 'base64url'),
      MAX_SIGNED_BYTES * 2
    )
    const payload = decodeMessage(schema, new TextEncoder().encode(envelope.p), MAX_SIGNED_BYTES)
    const owner = peerIdFromString(payload.owner)
    const valid =
      owner.publicKey !== undefined &&
      (await owner.publicKey.verify(
        new TextEncoder().encode(envelope.p),
        Buffer.from(envelope.s, 'base64url')
      ))
    if (!valid) throw new PoolAuthError('bad-credential', `${prefix} signature does not match its owner key`)
    return payload
  } catch (err) {
    if (err instanceof PoolAuthError) throw err
    const detail = err instanceof MessageError ? err.message : 'unreadable'
    throw new PoolAuthError('bad-credential', `${prefix} ${detail}`)
  }
}

export function ownerOf(key: PrivateKey): string {
  return peerIdFromPrivateKey(key).toString()
}

export async function createInvite(
  key: PrivateKey,
  fields: Omit<InvitePayload, 'v' | 'type' | 'owner'>
): Promise<string> {
  return await sign('invite', key, { v: 1, type: 'invite', owner: ownerOf(key), ...fields })
}

/** An invite whose signature holds; `now` past `expires` is refused. */
export async function readInvite(text: string, now = Date.now()): Promise<InvitePayload> {
  const invite = await open('invite', text.trim(), InvitePayload)
  if (invite.expires <= now)
    throw new PoolAuthError(
      'expired',
      `the invite to pool ${invite.pool} expired at ${new Date(invite.expires).toISOString()}`
    )
  return invite
}

export async function createCredential(
  key: PrivateKey,
  fields: Omit<CredentialPayload, 'v' | 'type' | 'owner'>
): Promise<string> {
  return await sign('credential', key, { v: 1, type: 'orchestrator', owner: ownerOf(key), ...fields })
}

export interface CredentialCheck {
  readonly pool: string
  /** The owner key the agent knows for the pool (from its invite, or pinned on first use). */
  readonly owner: string
  /** The peer that presents it: Noise has authenticated this id. */
  readonly subject: string
  readonly revoked: ReadonlySet<number>
  readonly now?: number | undefined
}

/** Verifies an orchestrator credential against what the agent knows; throws with the refusal reason. */
export async function checkCredential(
  text: string | undefined,
  check: CredentialCheck
): Promise<CredentialPayload> {
  if (text === undefined)
    throw new PoolAuthError('no-credential', `pool ${check.pool} needs a credential from its owner`)
  const credential = await open('credential', text, CredentialPayload)
  if (credential.pool !== check.pool)
    throw new PoolAuthError('bad-credential', `the credential is for pool ${credential.pool}`)
  if (credential.owner !== check.owner)
    throw new PoolAuthError('wrong-owner', `pool ${check.pool} belongs to another owner`)
  if (credential.subject !== check.subject)
    throw new PoolAuthError('wrong-subject', 'the credential was issued to another peer')
  if (credential.expires <= (check.now ?? Date.now()))
    throw new PoolAuthError('expired', 'the credential has expired')
  if (check.revoked.has(credential.serial)) throw new PoolAuthError('revoked', 'the credential was revoked')
  return credential
}

export async function createRevocations(
  key: PrivateKey,
  fields: Omit<RevocationPayload, 'v' | 'type' | 'owner'>
): Promise<string> {
  return await sign('revocations', key, { v: 1, type: 'revocations', owner: ownerOf(key), ...fields })
}

export async function readRevocations(text: string): Promise<RevocationPayload> {
  return await open('revocations', text, RevocationPayload)
}

/**
 * The owner a signed document claims, unverified: to know which key to check it against when the
 * reader has none yet (trust on first use, a credential handed to an orchestrator).
 */
export function claimedOwner(text: string): string | undefined {
  try {
    const body = JSON.parse(Buffer.from(text.slice(text.indexOf(':') + 1), 'base64url').toString('utf8')) as {
      p?: unknown
    }
    const owner = (JSON.parse(String(body.p)) as { owner?: unknown }).owner
    return typeof owner === 'string' ? owner : undefined
  } catch {
    return undefined
  }
}
