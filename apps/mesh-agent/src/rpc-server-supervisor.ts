import { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { describeExit, freeLoopbackPort, startRpcServer, type RpcServer } from '@frankenstein-mesh/llama'
import type { Logger } from 'pino'

export interface RpcServerSupervisorInit {
  readonly binary: string
  readonly logger: Logger
  readonly threads?: number | undefined
  readonly initialBackoffMs?: number | undefined
  readonly maxBackoffMs?: number | undefined
}

export interface SupervisorEvents {
  /** rpc-server died; every RPC session on it is gone (its buffers with it). */
  lost: [reason: string]
  /** rpc-server answers HELLO again after a restart. */
  restored: [RpcServer]
}

/**
 * Owns the worker's one rpc-server: starts it on a loopback port that stays the same across
 * restarts, restarts it with exponential backoff when it dies, and reports each loss.
 */
export class RpcServerSupervisor extends EventEmitter<SupervisorEvents> {
  private readonly init: RpcServerSupervisorInit
  private readonly log: Logger
  private server: RpcServer | undefined
  private stopping = false
  private fixedPort = 0
  restarts = 0
  lastLoss: string | undefined

  constructor(init: RpcServerSupervisorInit) {
    super()
    this.init = init
    this.log = init.logger.child({ component: 'rpc-supervisor' })
  }

  get current(): RpcServer | undefined {
    return this.server
  }

  get port(): number {
    return this.fixedPort
  }

  /** The first start must succeed: a binary that cannot run is a configuration error. */
  async start(): Promise<RpcServer> {
    this.fixedPort = await freeLoopbackPort()
    const server = await this.launch()
    void this.watch(server)
    return server
  }

  async stop(): Promise<void> {
    this.stopping = true
    await this.server?.stop()
  }

  /** A method, not the field, so that checks after an await see the current value. */
  private isStopping(): boolean {
    return this.stopping
  }

  private async launch(): Promise<RpcServer> {
    this.server = await startRpcServer({
      binary: this.init.binary,
      logger: this.init.logger,
      port: this.fixedPort,
      threads: this.init.threads
    })
    return this.server
  }

  private async watch(server: RpcServer): Promise<void> {
    const exit = await server.process.exited
    if (this.stopping) return
    this.server = undefined
    const reason = describeExit(exit)
    this.lastLoss = reason
    this.log.warn({ reason, tail: exit.tail.slice(-3) }, 'rpc-server lost')
    this.emit('lost', reason)
    let backoff = this.init.initialBackoffMs ?? 500
    while (!this.isStopping()) {
      await sleep(backoff)
      if (this.isStopping()) return
      try {
        const next = await this.launch()
        this.restarts++
        this.log.info({ restarts: this.restarts, port: next.port }, 'rpc-server restarted')
        this.emit('restored', next)
        void this.watch(next)
        return
      } catch (err) {
        backoff = Math.min(backoff * 2, this.init.maxBackoffMs ?? 30_000)
        this.log.warn({ err: (err as Error).message, retryInMs: backoff }, 'rpc-server restart failed')
      }
    }
  }
}
