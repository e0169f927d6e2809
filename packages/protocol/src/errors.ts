/** A message from the network (or a file, or a flag) that does not fit its schema or its size bound. */
export class MessageError extends Error {
  override readonly name = 'MessageError'
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}
