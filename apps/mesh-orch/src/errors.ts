/** Errors of the orchestrator's own: branch on `code`; the entry point prints the message and exits 2. */
export class OrchError extends Error {
  override readonly name: string = 'OrchError'
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}
