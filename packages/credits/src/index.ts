export { CreditsError } from './errors.ts'
export {
  CREDIT,
  TOLERANCE,
  NO_FIGURES,
  creditFor,
  deltaOf,
  disputeOf,
  figuresOf,
  type MeteredConnection
} from './formula.ts'
export {
  readReceipt,
  receiptText,
  signReceipt,
  signatureValid,
  verifyReceipt,
  type SignedReceipt
} from './receipt.ts'
export { Ledger, type Balance, type VerifyResult } from './ledger.ts'
export { ledgerReport, verifyLedgerFile } from './report.ts'
