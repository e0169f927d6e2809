/** Base of every error this package throws: branch on `code`, never on the message. */
export class TunnelError extends Error {
  override readonly name: string = 'TunnelError'
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}

/**
 * A multiplexed RPC session broke isolation or the protocol: it named a buffer that is not its
 * own, reached outside one of its buffers, sent what rpc-server would refuse (which would close the
 * shared connection), or stalled the others. Only that session is dropped.
 */
export class RpcIsolationError extends TunnelError {
  override readonly name = 'RpcIsolationError'
}

/** The multiplexer's own connection to rpc-server failed: every session on it ends. */
export class RpcMuxError extends TunnelError {
  override readonly name = 'RpcMuxError'
}

/**
 * A connection's RPC would have harmed rpc-server though its framing was fine: a graph rpc-server
 * would crash on, or one over the size the gate checks. The connection is cut before it is forwarded.
 */
export class RpcGateError extends TunnelError {
  override readonly name = 'RpcGateError'
}
