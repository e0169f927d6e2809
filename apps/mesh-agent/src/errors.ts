/** Errors of the agent's own: branch on `code`; the entry point prints the message and exits 2. */
export class AgentError extends Error {
  override readonly name = 'AgentError'
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}
