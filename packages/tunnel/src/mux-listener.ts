import { createServer, type Server } from 'node:net'
import type { RpcMux } from './mux-types.ts'

export interface MuxListener {
  readonly port: number
  /** `127.0.0.1:<port>`, as llama-server's `--rpc` wants it. */
  readonly endpoint: string
  close(): Promise<void>
}

/**
 * Serves the multiplexer to local TCP clients on 127.0.0.1, each connection one session of
 * `pool`: what a llama-server on the same machine (or a test) dials instead of the rpc-server.
 */
export async function listenRpcMux(
  mux: RpcMux,
  options: {
    readonly port?: number | undefined
    readonly pool?: string | undefined
    /** The pool's weight in sharing rpc-server's compute time (default 1). */
    readonly weight?: number | undefined
  } = {}
): Promise<MuxListener> {
  const port = options.port ?? 0
  const server: Server = createServer({ noDelay: true }, (socket) => {
    void mux.attach(socket, {
      pool: options.pool,
      weight: options.weight,
      label: `tcp:${socket.remotePort ?? 0}`
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  const address = server.address()
  const bound = typeof address === 'object' && address !== null ? address.port : port
  return {
    port: bound,
    endpoint: `127.0.0.1:${bound}`,
    close: () => new Promise((resolve) => server.close(() => resolve()))
  }
}
