import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { MAX_RECEIPT_BYTES, Receipt } from '@frankenstein-mesh/protocol'
import { CreditsError } from './errors.ts'
import { creditFor } from './formula.ts'

/** A receipt as both sides hold it: the exact text signed, and each side's signature over it. */
export interface SignedReceipt {
  readonly text: string
  /** base64url Ed25519 signatures by the worker's and the orchestrator's libp2p identities. */
  readonly workerSignature: string
  readonly orchestratorSignature: string
}

/** Signatures cover this prefix and the text, so a receipt signature is good for nothing else. */
const DOMAIN = 'frankenstein-mesh receipt v1\n'

export function receiptText(receipt: Receipt): string {
  return JSON.stringify(Receipt.parse(receipt))
}

/** Size first, then JSON, then the schema, then the credit arithmetic. */
export function readReceipt(text: string): Receipt {
  if (Buffer.byteLength(text) > MAX_RECEIPT_BYTES)
    throw new CreditsError('ERR_BAD_RECEIPT', `receipt over ${MAX_RECEIPT_BYTES} bytes`)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new CreditsError('ERR_BAD_RECEIPT', 'receipt is not JSON')
  }
  const parsed = Receipt.safeParse(json)
  if (!parsed.success)
    throw new CreditsError('ERR_BAD_RECEIPT', `receipt: ${parsed.error.issues[0]?.message}`)
  const receipt = parsed.data
  if (receipt.to < receipt.from)
    throw new CreditsError('ERR_BAD_RECEIPT', 'receipt period ends before it starts')
  if (receipt.credit !== creditFor(receipt.delta))
    throw new CreditsError('ERR_BAD_RECEIPT', `receipt credit ${receipt.credit} is not the formula's`)
  return receipt
}

export async function signReceipt(key: PrivateKey, text: string): Promise<string> {
  return Buffer.from(await key.sign(new TextEncoder().encode(DOMAIN + text))).toString('base64url')
}

export async function signatureValid(peer: string, text: string, signature: string): Promise<boolean> {
  try {
    const key = peerIdFromString(peer).publicKey
    if (key === undefined) return false
    return await key.verify(new TextEncoder().encode(DOMAIN + text), Buffer.from(signature, 'base64url'))
  } catch {
    return false
  }
}

/** Checks a doubly-signed receipt; throws naming what is wrong. */
export async function verifyReceipt(signed: SignedReceipt): Promise<Receipt> {
  const receipt = readReceipt(signed.text)
  if (!(await signatureValid(receipt.worker, signed.text, signed.workerSignature)))
    throw new CreditsError('ERR_BAD_RECEIPT', "the worker's signature does not match")
  if (!(await signatureValid(receipt.orchestrator, signed.text, signed.orchestratorSignature)))
    throw new CreditsError('ERR_BAD_RECEIPT', "the orchestrator's signature does not match")
  return receipt
}
