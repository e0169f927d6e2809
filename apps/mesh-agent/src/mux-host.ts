import type { Duplex } from 'node:stream'
import { startRpcMux, type MuxPoolInfo, type MuxStats, type RpcMux } from '@frankenstein-mesh/tunnel'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'

export interface MuxHostInit {
  /** The rpc-server's port on 127.0.0.1 (the same across supervisor restarts). */
  readonly upstreamPort: () => number
  readonly pools: readonly string[]
  readonly quota: (pool: string) => number | undefined
  /** A pool's weight in sharing rpc-server's compute time (`--pool a=2`). */
  readonly weight: (pool: string) => number
  readonly logger: Logger
  /**
   * Whether to reconnect by itself, now, when the upstream connection is gone or a restart
   * failed: always for an rpc-server nobody here supervises; for a supervised one only while it
   * is up (the connection ended on its own), since while it restarts, its readiness check and we
   * would race for its one client slot, and the supervisor's `restored` calls `restart` anyway.
   */
  readonly reconnect: () => boolean
}

/** What status shows of the multiplexer. */
export interface MuxView {
  readonly up: boolean
  readonly pools: readonly MuxPoolInfo[]
  readonly stats: MuxStats
}

const NO_STATS: MuxStats = {
  sessions: 0,
  dropped: 0,
  graphRestores: 0,
  refusedAllocs: 0,
  computeMs: {},
  internalComputeMs: 0
}

/** The totals of two multiplexers' lives (the agent starts a new one whenever rpc-server is back). */
function addStats(a: MuxStats, b: MuxStats): MuxStats {
  const computeMs: Record<string, number> = { ...a.computeMs }
  for (const [pool, ms] of Object.entries(b.computeMs)) computeMs[pool] = (computeMs[pool] ?? 0) + ms
  return {
    sessions: a.sessions + b.sessions,
    dropped: a.dropped + b.dropped,
    graphRestores: a.graphRestores + b.graphRestores,
    refusedAllocs: a.refusedAllocs + b.refusedAllocs,
    computeMs,
    internalComputeMs: a.internalComputeMs + b.internalComputeMs
  }
}

/**
 * Concurrent sharing's half of the agent: the multiplexer as rpc-server's one client, which the
 * RPC service hands each lease holder's stream to in-process, as a session of the holder's pool
 * (each stream still passes the agent's gate and metering first). rpc-server lost: the
 * multiplexer goes with it (every session dropped); restored: `restart` starts a new one.
 */
export class MuxHost {
  private readonly init: MuxHostInit
  private readonly log: Logger
  private mux: RpcMux | undefined
  private totals: MuxStats = NO_STATS
  private restarting: Promise<void> | undefined
  private recovering = false
  private stopped = false

  constructor(init: MuxHostInit) {
    this.init = init
    this.log = init.logger.child({ component: 'mux-host' })
  }

  async start(): Promise<void> {
    const mux = await startRpcMux({
      upstreamPort: this.init.upstreamPort(),
      logger: this.init.logger,
      quota: (pool) => this.init.quota(pool),
      weight: (pool) => this.init.weight(pool)
    })
    if (this.stopped) {
      mux.close()
      return
    }
    this.mux = mux
    void mux.closed.then((err) => {
      if (this.mux !== mux) return
      if (err !== undefined) this.log.warn({ err: err.message }, 'multiplexer closed')
      this.retire()
      this.recoverIfAllowed()
    })
  }

  /**
   * How a pool's streams become sessions: attaching one end of an in-process pair to the
   * multiplexer now up; undefined while it is down, or for a pool this agent did not join.
   */
  attacher(pool: string, label: string): ((end: Duplex) => void) | undefined {
    const mux = this.mux
    if (mux === undefined || !this.init.pools.includes(pool)) return undefined
    return (end) => void mux.attach(end, { pool, weight: this.init.weight(pool), label })
  }

  /** rpc-server is back after a loss: a new multiplexer on it, the old one's totals kept. */
  restart(): Promise<void> {
    if (this.stopped) return Promise.resolve()
    this.restarting ??= (async () => {
      this.retire()
      await this.start().catch((err: unknown) =>
        this.log.error({ err: (err as Error).message }, 'multiplexer restart failed')
      )
    })().finally(() => {
      this.restarting = undefined
      this.recoverIfAllowed()
    })
    return this.restarting
  }

  view(): MuxView {
    const live = this.mux?.stats() ?? NO_STATS
    return {
      up: this.mux !== undefined,
      pools: this.mux?.pools() ?? [],
      stats: addStats(this.totals, live)
    }
  }

  stop(): void {
    this.stopped = true
    this.retire()
  }

  /** Down, and allowed to reconnect by itself: tries again with backoff, once at a time. */
  private recoverIfAllowed(): void {
    if (this.recovering || !this.down() || !this.init.reconnect()) return
    this.recovering = true
    void this.recover().finally(() => (this.recovering = false))
  }

  private async recover(): Promise<void> {
    let backoff = 1_000
    while (this.down() && this.init.reconnect()) {
      await sleep(backoff)
      if (!this.down() || !this.init.reconnect()) return
      await this.restart()
      backoff = Math.min(backoff * 2, 30_000)
    }
  }

  /** A method, not fields, so that checks after an await see the current values. */
  private down(): boolean {
    return !this.stopped && this.mux === undefined && this.restarting === undefined
  }

  private retire(): void {
    const mux = this.mux
    if (mux === undefined) return
    this.mux = undefined
    this.totals = addStats(this.totals, mux.stats())
    mux.close()
  }
}
