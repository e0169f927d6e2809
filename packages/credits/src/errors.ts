/** Errors of receipts and ledgers; `code` is stable (docs/errors.md). */
export class CreditsError extends Error {
  override readonly name = 'CreditsError'
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}
