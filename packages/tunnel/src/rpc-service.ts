import { connect } from 'node:net'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { PROTOCOL } from '@frankenstein-mesh/protocol'
import type { Logger } from 'pino'
import { bridge, type Gate } from './bridge.ts'
import { RpcGate, type RpcTraffic } from './rpc-gate.ts'

export interface RpcServiceInit {
  readonly node: Libp2p
  /**
   * Port of the worker's rpc-server on 127.0.0.1, or of whatever stands for it for this peer (with
   * concurrent sharing, the multiplexer's port for the peer's pool).
   */
  readonly rpcServerPort: number | ((peer: string) => number)
  readonly logger: Logger
  /** Decides whether a peer's stream may reach rpc-server; refused streams are reset at once. */
  readonly authorize?: ((connection: Connection) => boolean) | undefined
  /** Called whenever a peer's RPC bytes come in: the agent's measure of a lease holder being busy. */
  readonly onActivity?: ((peer: string) => void) | undefined
  /** Called with the counters of each RPC connection when it ends. */
  readonly onEnd?: ((peer: string, traffic: RpcTraffic) => void) | undefined
}

export interface RpcService {
  /** RPC connections now open. */
  readonly open: number
  /** Ends every RPC connection of one peer (its lease is over): rpc-server frees their buffers. */
  closePeer(peer: string): void
  /** Counters of a peer's connections still open (ended ones go to `onEnd`). */
  live(peer: string): RpcTraffic[]
  stop(): Promise<void>
}

/**
 * The agent's end of the tunnels: every stream on /frankenstein/rpc/1.0.0 becomes one TCP
 * connection to the local rpc-server, after the RPC parser has checked the bytes it forwards.
 */
export async function startRpcService(init: RpcServiceInit): Promise<RpcService> {
  const log = init.logger.child({ component: 'rpc-service' })
  const open = new Map<Stream, { peer: string; gate: RpcGate }>()
  const port =
    typeof init.rpcServerPort === 'function' ? init.rpcServerPort : () => init.rpcServerPort as number

  const handle = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer.toString()
    if (init.authorize !== undefined && !init.authorize(connection)) {
      log.warn({ peer }, 'rpc stream refused')
      stream.abort(new Error('not authorized'))
      return
    }
    const gate = new RpcGate()
    open.set(stream, { peer, gate })
    const socket = connect({ host: '127.0.0.1', port: port(peer), noDelay: true, allowHalfOpen: true })
    const onActivity = init.onActivity
    const fromStream: Gate =
      onActivity === undefined
        ? gate.request
        : (chunk, forward) => {
            onActivity(peer)
            gate.request(chunk, forward)
          }
    const end = await bridge({ socket, stream, fromStream, fromSocket: gate.response })
    gate.end()
    open.delete(stream)
    const traffic = gate.snapshot()
    log.debug({ peer, clean: end.clean, error: end.error?.message, ...traffic }, 'rpc connection ended')
    init.onEnd?.(peer, traffic)
  }

  await init.node.handle(PROTOCOL.rpc, (stream, connection) => void handle(stream, connection), {
    maxInboundStreams: 64,
    runOnLimitedConnection: true
  })
  return {
    get open() {
      return open.size
    },
    closePeer: (peer) => {
      for (const [stream, owner] of open) if (owner.peer === peer) stream.abort(new Error('lease over'))
    },
    live: (peer) => [...open.values()].filter((o) => o.peer === peer).map((o) => o.gate.snapshot()),
    stop: async () => {
      await init.node.unhandle(PROTOCOL.rpc)
      for (const stream of open.keys()) stream.abort(new Error('rpc service stopping'))
    }
  }
}
