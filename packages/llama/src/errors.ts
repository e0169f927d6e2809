/** Base of every error this package throws: branch on `code`, never on the message. */
export class LlamaError extends Error {
  override readonly name: string = 'LlamaError'
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}

/** The RPC byte stream broke the protocol: unknown command, wrong size, unexpected response. */
export class RpcProtocolError extends LlamaError {
  override readonly name = 'RpcProtocolError'
}

/** An RPC peer did not answer, closed early, or answered something we cannot use. */
export class RpcClientError extends LlamaError {
  override readonly name = 'RpcClientError'
}

/** A GGUF file is malformed, truncated, or uses something we do not support. */
export class GgufError extends LlamaError {
  override readonly name = 'GgufError'
}

/** A llama.cpp binary is missing, cannot be built, or does not work. */
export class BinaryError extends LlamaError {
  override readonly name = 'BinaryError'
}

/** A supervised process failed to start, to become ready, or to stop. */
export class ProcessError extends LlamaError {
  override readonly name = 'ProcessError'
}
