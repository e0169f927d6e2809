import { createServer, type Server, type Socket } from 'node:net'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { PROTOCOL } from '@frankenstein-mesh/protocol'
import type { Logger } from 'pino'
import { bridge } from './bridge.ts'
import { RpcGate, type RpcTraffic } from './rpc-gate.ts'

export interface RpcTunnelInit {
  readonly node: Libp2p
  /** The worker whose agent carries our RPC to its rpc-server. */
  readonly peer: PeerId
  readonly logger: Logger
  /** Bound on opening the stream to the agent. */
  readonly dialTimeoutMs?: number | undefined
}

export interface RpcTunnel {
  readonly peer: PeerId
  readonly port: number
  /** `127.0.0.1:<port>`, what llama-server's `--rpc` points at. */
  readonly endpoint: string
  /** Connections now open, and the counters of every connection so far. */
  readonly open: number
  traffic(): RpcTraffic[]
  close(): Promise<void>
}

/**
 * The orchestrator's end of a tunnel: a TCP listener on 127.0.0.1 for one worker. Every accepted
 * connection (llama-server opens several) becomes one libp2p stream on /frankenstein/rpc/1.0.0
 * to that worker's agent.
 */
export async function startRpcTunnel(init: RpcTunnelInit): Promise<RpcTunnel> {
  const log = init.logger.child({ component: 'rpc-tunnel', peer: init.peer.toString() })
  const gates: RpcGate[] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.pause()
    void carry(socket)
  })

  const carry = async (socket: Socket): Promise<void> => {
    const gate = new RpcGate()
    gates.push(gate)
    let stream
    try {
      stream = await init.node.dialProtocol(init.peer, PROTOCOL.rpc, {
        signal: AbortSignal.timeout(init.dialTimeoutMs ?? 10_000),
        runOnLimitedConnection: true
      })
    } catch (err) {
      log.warn({ err }, 'cannot open an rpc stream to the worker')
      socket.destroy()
      return
    }
    socket.resume()
    const end = await bridge({ socket, stream, fromSocket: gate.request, fromStream: gate.response })
    gate.end()
    log.debug({ clean: end.clean, error: end.error?.message, ...gate.snapshot() }, 'rpc connection ended')
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port: 0 }, resolve)
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('tunnel listener has no port')
  log.info({ port: address.port }, 'rpc tunnel listening')
  return {
    peer: init.peer,
    port: address.port,
    endpoint: `127.0.0.1:${address.port}`,
    get open() {
      return sockets.size
    },
    traffic: () => gates.map((g) => g.snapshot()),
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
