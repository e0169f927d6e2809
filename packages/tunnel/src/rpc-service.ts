import { Socket } from 'node:net'
import { duplexPair, type Duplex } from 'node:stream'
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
  /**
   * An in-process destination for every stream instead of a TCP connection to the port: for a peer,
   * a function that takes one end of a duplex pair carrying the stream's gated bytes (with
   * concurrent sharing, the multiplexer's attach for the peer's pool); undefined while there is
   * none for that peer, and the stream is cut.
   */
  readonly attach?: ((peer: string) => ((end: Duplex) => void) | undefined) | undefined
  readonly logger: Logger
  /** Decides whether a peer's stream may reach rpc-server; refused streams are reset at once. */
  readonly authorize?: ((connection: Connection) => boolean) | undefined
  /** Called whenever a peer's RPC bytes come in: the agent's measure of a lease holder being busy. */
  readonly onActivity?: ((peer: string) => void) | undefined
  /** Called with the counters of each RPC connection when it ends. */
  readonly onEnd?: ((peer: string, traffic: RpcTraffic) => void) | undefined
}

export interface RpcService {
  /** RPC connections now open (that have carried bytes: a stream opened ahead is not counted). */
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
  /** Every stream being served; `started` once it has carried bytes (an idle spare has not). */
  const open = new Map<Stream, { peer: string; gate: RpcGate; started: boolean }>()
  const started = (): Array<{ peer: string; gate: RpcGate }> => [...open.values()].filter((o) => o.started)
  const port =
    typeof init.rpcServerPort === 'function' ? init.rpcServerPort : () => init.rpcServerPort as number

  const handle = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer.toString()
    if (init.authorize !== undefined && !init.authorize(connection)) {
      log.warn({ peer }, 'rpc stream refused')
      stream.abort(new Error('not authorized'))
      return
    }
    // Graphs bound straight for rpc-server are checked here; the multiplexer checks its own.
    const gate = new RpcGate({ checkGraphs: init.attach === undefined })
    const entry = { peer, gate, started: false }
    open.set(stream, entry)
    // Connected on the first bytes, not now: the orchestrator opens a stream ahead of need, and
    // rpc-server serves one connection at a time, so an idle stream must not take its turn.
    const { end: socket, open: connectTarget } = target(init.attach, peer, port)
    const onActivity = init.onActivity
    const fromStream: Gate = (chunk, forward) => {
      onActivity?.(peer)
      if (entry.started) {
        gate.request(chunk, forward)
        return
      }
      gate.request(chunk, (bytes) => {
        if (!entry.started) {
          entry.started = true
          connectTarget()
        }
        forward(bytes)
      })
    }
    const unused = (): void => {
      if (!entry.started) socket.destroy()
    }
    stream.addEventListener('remoteCloseWrite', unused)
    stream.addEventListener('close', unused)
    const end = await bridge({ socket, stream, fromStream, fromSocket: gate.response })
    gate.end()
    open.delete(stream)
    if (!entry.started) {
      log.debug({ peer }, 'rpc stream opened ahead ended unused')
      return
    }
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
      return started().length
    },
    closePeer: (peer) => {
      for (const [stream, owner] of open) if (owner.peer === peer) stream.abort(new Error('lease over'))
    },
    live: (peer) =>
      started()
        .filter((o) => o.peer === peer)
        .map((o) => o.gate.snapshot()),
    stop: async () => {
      await init.node.unhandle(PROTOCOL.rpc)
      for (const stream of open.keys()) stream.abort(new Error('rpc service stopping'))
    }
  }
}

/**
 * Where a stream's gated bytes go: the end the bridge writes to, and how to reach its far side
 * once the first bytes have passed the gate. With `attach`, an in-process pair (no socket, no
 * second parse of the bytes by the kernel); otherwise a TCP connection to rpc-server's port. Both
 * are looked up only then: a stream opened ahead may wait through an rpc-server restart.
 */
function target(
  attach: RpcServiceInit['attach'],
  peer: string,
  port: (peer: string) => number
): { end: Duplex; open: () => void } {
  if (attach === undefined) {
    const socket = new Socket({ allowHalfOpen: true }).setNoDelay(true)
    return { end: socket, open: () => socket.connect({ host: '127.0.0.1', port: port(peer) }) }
  }
  const [near, far] = duplexPair()
  // Ending carries over in a pair; destroying does not: a reset must, as it does on TCP.
  near.once('close', () => far.destroy())
  far.once('close', () => near.destroy())
  const open = (): void => {
    const to = attach(peer)
    if (to === undefined) near.destroy(new Error('no rpc multiplexer for this peer now'))
    else to(far)
  }
  return { end: near, open }
}
