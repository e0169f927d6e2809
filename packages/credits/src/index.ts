export { CreditsError } from './errors.ts'
export { CREDIT, TOLERANCE, creditFor, deltaOf, disputeOf } from './formula.ts'
export {
  readReceipt,
  receiptText,
  signReceipt,
  signatureValid,
  verifyReceipt,
  type SignedReceipt
} from './receipt.ts'
export { Ledger, type Balance, type VerifyResult } from './ledger.ts'
