import { createServer, type Server, type Socket } from 'node:net'
import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
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
 *
 * Opening a stream costs a round trip to the agent (multistream-select waits for the agent's
 * answer; this libp2p has no optimistic select), and llama-server opens its connections one
 * after another, 14 of them while it loads a model over two workers. So the tunnel keeps one
 * stream open ahead, and an accepted connection takes it at once; the agent connects to
 * rpc-server only when the first bytes come (see rpc-service.ts), so a spare never holds it.
 */
export async function startRpcTunnel(init: RpcTunnelInit): Promise<RpcTunnel> {
  const log = init.logger.child({ component: 'rpc-tunnel', peer: init.peer.toString() })
  const gates: RpcGate[] = []
  const sockets = new Set<Socket>()
  let closed = false
  const server: Server = createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.pause()
    void carry(socket)
  })

  const openStream = (): Promise<Stream> =>
    init.node.dialProtocol(init.peer, PROTOCOL.rpc, {
      signal: AbortSignal.timeout(init.dialTimeoutMs ?? 10_000),
      runOnLimitedConnection: true
    })

  /** The stream opened ahead, if any: settles to undefined if it could not be opened. */
  let spare: Promise<Stream | undefined> | undefined
  const prime = (): void => {
    if (closed) return
    const next: Promise<Stream | undefined> = openStream().then(
      (stream) => {
        stream.addEventListener('close', () => {
          if (spare === next) spare = undefined
        })
        return stream
      },
      (err: unknown) => {
        log.debug({ err }, 'no rpc stream opened ahead; the next connection opens its own')
        if (spare === next) spare = undefined
        return undefined
      }
    )
    spare = next
  }
  const takeStream = async (): Promise<Stream> => {
    const ahead = spare
    spare = undefined
    prime()
    const stream = ahead === undefined ? undefined : await ahead
    if (stream?.status === 'open' && stream.writeStatus === 'writable' && stream.readStatus === 'readable')
      return stream
    stream?.abort(new Error('spare rpc stream no longer usable'))
    return openStream()
  }

  const carry = async (socket: Socket): Promise<void> => {
    const gate = new RpcGate()
    gates.push(gate)
    let stream
    try {
      stream = await takeStream()
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
  prime()
  return {
    peer: init.peer,
    port: address.port,
    endpoint: `127.0.0.1:${address.port}`,
    get open() {
      return sockets.size
    },
    traffic: () => gates.map((g) => g.snapshot()),
    close: async () => {
      closed = true
      const ahead = spare
      spare = undefined
      void ahead?.then((stream) => stream?.abort(new Error('rpc tunnel closed')))
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
