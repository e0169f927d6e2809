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
export { createApiKey, readApiKey } from './api-key.ts'
export { TOKENS_PER_CREDIT, createSpend, spendFor, verifySpend, type SignedSpend } from './spend.ts'
export { creditsCommand, ledgerPath, type CreditsOptions } from './cli.ts'
