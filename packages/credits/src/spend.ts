import { randomUUID } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { MAX_RECEIPT_BYTES, Spend } from '@frankenstein-mesh/protocol'
import { CreditsError } from './errors.ts'
import { signReceipt, signatureValid } from './receipt.ts'

/** Spending: one credit buys ten thousand tokens processed (prompt and completion) on the pool's API. */
export const TOKENS_PER_CREDIT = 10_000

export function spendFor(tokens: number): number {
  return Math.round((tokens / TOKENS_PER_CREDIT) * 1e6) / 1e6
}

/** A charge, as the ledger keeps it: the text and the orchestrator's signature over it. */
export interface SignedSpend {
  readonly text: string
  readonly signature: string
}

export async function createSpend(
  key: PrivateKey,
  charge: { pool: string; identity: string; tokens: number; at?: number }
): Promise<SignedSpend> {
  const spend: Spend = {
    v: 1,
    type: 'spend',
    pool: charge.pool,
    identity: charge.identity,
    orchestrator: peerIdFromPrivateKey(key).toString(),
    tokens: charge.tokens,
    credit: spendFor(charge.tokens),
    at: charge.at ?? Date.now(),
    id: randomUUID()
  }
  const text = JSON.stringify(Spend.parse(spend))
  return { text, signature: await signReceipt(key, text) }
}

export async function verifySpend(signed: SignedSpend): Promise<Spend> {
  if (Buffer.byteLength(signed.text) > MAX_RECEIPT_BYTES)
    throw new CreditsError('ERR_BAD_RECEIPT', 'spend too large')
  let spend: Spend
  try {
    spend = Spend.parse(JSON.parse(signed.text))
  } catch {
    throw new CreditsError('ERR_BAD_RECEIPT', 'spend is malformed')
  }
  if (spend.credit !== spendFor(spend.tokens))
    throw new CreditsError('ERR_BAD_RECEIPT', `spend credit ${spend.credit} is not the formula's`)
  if (!(await signatureValid(spend.orchestrator, signed.text, signed.signature)))
    throw new CreditsError('ERR_BAD_RECEIPT', "the orchestrator's signature does not match")
  return spend
}
