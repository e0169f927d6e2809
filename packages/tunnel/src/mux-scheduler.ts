/** What a scheduler sees of a session waiting to forward a command. */
export interface MuxSessionView {
  readonly id: number
  readonly pool: string
  readonly label: string
  /** Bytes the session has queued, whole commands. */
  readonly queuedBytes: number
}

/**
 * Decides, at every command boundary, whose next command goes to rpc-server. `pick` sees the
 * sessions that have a command ready and those awaiting a reply (`inFlight`); it may return
 * undefined to hold everyone back, and is asked again at the next event or after `holdMs`.
 */
export interface MuxScheduler {
  pick<S extends MuxSessionView>(ready: readonly S[], inFlight: readonly S[]): S | undefined
  /** Compute time (ms) to add to a pool's account: an estimate at dispatch, corrections later. */
  charge?(pool: string, ms: number): void
  /** How long the multiplexer waits before asking again after `pick` held everyone back. */
  readonly holdMs?: number
}

/** Takes sessions in turn, one command each. */
export function roundRobin(): MuxScheduler {
  let last = 0
  return {
    pick<S extends MuxSessionView>(ready: readonly S[]): S {
      const next = ready.find((s) => s.id > last) ?? ready[0]
      if (next === undefined) throw new RangeError('no session is ready')
      last = next.id
      return next
    }
  }
}

export interface FairShareInit {
  /** A pool's weight (default 1); asked at every pick, so it may change as pools come and go. */
  readonly weight?: ((pool: string) => number | undefined) | undefined
  /**
   * How long (ms) a pool that was just answered still counts as wanting compute, so that a pool
   * ahead of it in virtual time is held back meanwhile (default 4 ms; 0 = work-conserving).
   */
  readonly holdMs?: number | undefined
  /** Milliseconds, monotonic (default performance.now). */
  readonly now?: (() => number) | undefined
}

interface PoolAccount {
  /** Virtual finish time: compute charged so far divided by the weight, lifted on activation. */
  finish: number
  /** When the pool last had something ready, in flight or charged. */
  seen: number
  active: boolean
}

/**
 * Start-time fair queuing between pools (Goyal et al., 1996) on measured compute time: the next
 * command is the ready pool's with the smallest virtual time, sessions of one pool take turns.
 * Costs arrive late (a command's time is known at its reply) so dispatch charges an estimate and
 * the measurement corrects it. A pool idle for longer than `holdMs` re-enters at the system's
 * virtual time: it banks no credit. A pool that was just answered and is behind in virtual time
 * holds the others back for up to `holdMs` (llama-server sends a token's commands only after the
 * previous reply: without the hold, two chains alternate one token each whatever the weights).
 */
export function fairShare(init: FairShareInit = {}): MuxScheduler {
  const holdMs = init.holdMs ?? 4
  const now = init.now ?? (() => performance.now())
  const weightOf = (pool: string): number => {
    const w = init.weight?.(pool)
    return w !== undefined && w > 0 && Number.isFinite(w) ? w : 1
  }
  const accounts = new Map<string, PoolAccount>()
  let virtual = 0
  const turn = roundRobin()
  const account = (pool: string): PoolAccount => {
    let a = accounts.get(pool)
    if (a === undefined) {
      a = { finish: virtual, seen: -Infinity, active: false }
      accounts.set(pool, a)
    }
    return a
  }

  /** Marks which pools want compute now; pools coming back from idle start at the virtual time. */
  const refresh = (
    ready: readonly MuxSessionView[],
    inFlight: readonly MuxSessionView[],
    t: number
  ): void => {
    for (const s of [...ready, ...inFlight]) account(s.pool).seen = t
    const wasActive = [...accounts.values()].filter((a) => a.active)
    if (wasActive.length > 0) virtual = Math.max(virtual, Math.min(...wasActive.map((a) => a.finish)))
    for (const a of accounts.values()) {
      const active = t - a.seen <= holdMs
      if (active && !a.active) a.finish = Math.max(a.finish, virtual)
      a.active = active
    }
  }

  return {
    holdMs,
    pick<S extends MuxSessionView>(ready: readonly S[], inFlight: readonly S[]): S | undefined {
      const t = now()
      refresh(ready, inFlight, t)
      let best: string | undefined
      for (const s of ready) {
        const f = account(s.pool).finish
        if (best === undefined || f < account(best).finish) best = s.pool
      }
      if (best === undefined) throw new RangeError('no session is ready')
      const lead = account(best).finish
      const readyPools = new Set(ready.map((s) => s.pool))
      for (const [pool, a] of accounts)
        if (!readyPools.has(pool) && a.active && a.finish < lead && holdMs > 0) return undefined
      return turn.pick(
        ready.filter((s) => s.pool === best),
        []
      )
    },
    charge(pool: string, ms: number): void {
      const a = account(pool)
      a.finish += ms / weightOf(pool)
      a.seen = Math.max(a.seen, now())
    }
  }
}
