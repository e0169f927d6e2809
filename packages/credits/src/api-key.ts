import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { ApiKeyPayload, MAX_API_KEY_BYTES } from '@frankenstein-mesh/protocol'
import { z } from 'zod'
import { CreditsError } from './errors.ts'

const PREFIX = 'fmk_'
const DOMAIN = 'frankenstein-mesh api-key v1\n'
const Envelope = z.object({ p: z.string().max(MAX_API_KEY_BYTES), s: z.string().max(200) })

/**
 * An API key a contributor makes for themselves: their identity's signature over (identity, pool,
 * expiry). It needs no exchange with the orchestrator, which checks the signature against the
 * identity's public key. It is a bearer token: whoever holds it spends that identity's credit.
 */
export async function createApiKey(
  key: PrivateKey,
  options: { pool: string; expires: number }
): Promise<string> {
  const payload = ApiKeyPayload.parse({
    v: 1,
    type: 'api-key',
    identity: peerIdFromPrivateKey(key).toString(),
    pool: options.pool,
    expires: options.expires
  })
  const p = JSON.stringify(payload)
  const s = Buffer.from(await key.sign(new TextEncoder().encode(DOMAIN + p))).toString('base64url')
  return PREFIX + Buffer.from(JSON.stringify({ p, s })).toString('base64url')
}

/** Checks size, shape, signature and expiry; returns who the key speaks for. */
export async function readApiKey(text: string, now = Date.now()): Promise<ApiKeyPayload> {
  const bad = (why: string) => new CreditsError('ERR_BAD_API_KEY', `API key ${why}`)
  if (!text.startsWith(PREFIX) || text.length > 2 * MAX_API_KEY_BYTES) throw bad('is not an fmk_ key')
  let envelope
  let payload
  try {
    envelope = Envelope.parse(
      JSON.parse(Buffer.from(text.slice(PREFIX.length), 'base64url').toString('utf8'))
    )
    payload = ApiKeyPayload.parse(JSON.parse(envelope.p))
  } catch {
    throw bad('is malformed')
  }
  const publicKey = peerIdFromString(payload.identity).publicKey
  const valid =
    publicKey !== undefined &&
    (await publicKey.verify(
      new TextEncoder().encode(DOMAIN + envelope.p),
      Buffer.from(envelope.s, 'base64url')
    ))
  if (!valid) throw bad('signature does not match its identity')
  if (payload.expires <= now) throw bad('has expired')
  return payload
}
