/**
 * Exclusive leases on the worker's one rpc-server, shared between the pools it joined in
 * proportion to their weights (the BOINC client's resource shares): pure logic over an injected
 * clock, so that fairness is tested over simulated days in milliseconds.
 *
 * Each pool's use decays exponentially (a rolling window of `halfLifeMs`); among pools that want
 * the worker, the one with the least use per unit of weight is owed it next. A holder keeps the
 * worker for at least `minSliceMs` (every switch costs a full model load), then yields with
 * `graceMs` of notice when a waiting pool is owed more. A holder that stops renewing loses its
 * lease after `leaseTtlMs`. A pool that comes back after being idle may be owed at most
 * `maxDebtMs` of weighted time, so its return cannot lock the others out for hours.
 *
 * The half-life is long on purpose: the holder's and the waiter's uses oscillate around each
 * other by a slice, and decay pulls the larger one down faster; with a 1 h half-life that bias
 * cost the heavier pool 8% of its share (1.84:1 instead of 2:1), with 6 h it is about 1%.
 */

import type { LeaseSharing } from '@frankenstein-mesh/protocol'
import type { LeasePolicy } from './lease-policy.ts'

export interface PoolShare {
  readonly name: string
  readonly weight: number
}

export interface LeaseSchedulerInit {
  readonly pools: readonly PoolShare[]
  readonly now: () => number
  readonly minSliceMs?: number | undefined
  readonly graceMs?: number | undefined
  readonly halfLifeMs?: number | undefined
  readonly leaseTtlMs?: number | undefined
  readonly maxDebtMs?: number | undefined
  /** A holder that sent no RPC for this long yields at once to a waiting pool. */
  readonly idleMs?: number | undefined
}

export interface Lease {
  readonly id: number
  readonly pool: string
  readonly grantedAt: number
  /** Set once the holder has been asked to yield: it must release by then. */
  readonly revokeBy?: number | undefined
  /** Absent: exclusive. */
  readonly sharing?: LeaseSharing | undefined
  /** Buffer bytes the pool may hold in rpc-server, with concurrent sharing. */
  readonly quotaBytes?: number | undefined
}

export type LeaseAnswer =
  | { readonly granted: true; readonly lease: Lease }
  | { readonly granted: false; readonly reason: 'busy'; readonly holder: string; readonly freeAt: number }
  | { readonly granted: false; readonly reason: 'unknown-pool' }

/** What the agent must do as time passes. */
export type SchedulerAction =
  | { readonly type: 'revoke'; readonly lease: Lease; readonly revokeBy: number }
  /** Grace is over, or the holder went silent: close its streams (rpc-server frees its buffers). */
  | { readonly type: 'terminate'; readonly lease: Lease; readonly reason: 'grace-expired' | 'lease-expired' }
  | { readonly type: 'grant'; readonly lease: Lease }

interface PoolState {
  readonly weight: number
  use: number
  usedAt: number
  waiting: boolean
}

export class LeaseScheduler implements LeasePolicy {
  readonly sharing: LeaseSharing = 'exclusive'
  private readonly now: () => number
  private readonly minSliceMs: number
  private readonly graceMs: number
  private readonly halfLifeMs: number
  private readonly leaseTtlMs: number
  private readonly maxDebtMs: number
  private readonly idleMs: number
  private readonly pools = new Map<string, PoolState>()
  private holder: (Lease & { renewedAt: number; activeAt?: number }) | undefined
  private nextId = 1

  constructor(init: LeaseSchedulerInit) {
    this.now = init.now
    this.minSliceMs = init.minSliceMs ?? 5 * 60_000
    this.graceMs = init.graceMs ?? 30_000
    this.halfLifeMs = init.halfLifeMs ?? 6 * 60 * 60_000
    this.leaseTtlMs = init.leaseTtlMs ?? 60_000
    this.maxDebtMs = init.maxDebtMs ?? 30 * 60_000
    this.idleMs = init.idleMs ?? 60_000
    const t = this.now()
    for (const pool of init.pools)
      this.pools.set(pool.name, { weight: pool.weight, use: 0, usedAt: t, waiting: false })
  }

  get current(): Lease | undefined {
    return this.holder
  }

  /** A pool asks for the worker: granted when free, otherwise a clear busy answer with an estimate. */
  request(pool: string): LeaseAnswer {
    const state = this.pools.get(pool)
    if (state === undefined) return { granted: false, reason: 'unknown-pool' }
    if (this.holder?.pool === pool) return { granted: true, lease: this.holder }
    if (!state.waiting) this.boundDebt(pool, state)
    if (this.holder === undefined) return { granted: true, lease: this.grant(pool) }
    state.waiting = true
    return { granted: false, reason: 'busy', holder: this.holder.pool, freeAt: this.estimateFree() }
  }

  /** The holder shows it is alive; a lease not renewed for `leaseTtlMs` is terminated. */
  renew(leaseId: number): boolean {
    if (this.holder?.id !== leaseId) return false
    this.holder.renewedAt = this.now()
    return true
  }

  /** The holder gives the worker back (done, or complying with a revocation). */
  release(leaseId: number): SchedulerAction[] {
    if (this.holder?.id !== leaseId) return []
    this.account(this.holder.pool)
    this.holder = undefined
    return this.grantNext()
  }

  /** A waiting pool no longer wants the worker (its orchestrator went away or found another). */
  withdraw(pool: string): void {
    const state = this.pools.get(pool)
    if (state !== undefined) state.waiting = false
  }

  /** Call regularly (and after every event): returns what the agent must do now. */
  tick(): SchedulerAction[] {
    const holder = this.holder
    if (holder === undefined) return this.grantNext()
    const t = this.now()
    if (t - holder.renewedAt > this.leaseTtlMs) return this.terminate('lease-expired')
    if (holder.revokeBy !== undefined) return t >= holder.revokeBy ? this.terminate('grace-expired') : []
    const owed = this.mostOwed()
    if (owed === undefined) return []
    // An idle holder yields to anyone waiting, fairness and minimum slice aside: it loses no work.
    const idle = t - this.lastActivity(holder) >= this.idleMs
    if (!idle && t - holder.grantedAt < this.minSliceMs) return []
    if (!idle && this.normalizedUse(owed) >= this.normalizedUse(holder.pool)) return []
    const revokeBy = t + this.graceMs
    this.holder = { ...holder, revokeBy }
    return [{ type: 'revoke', lease: this.holder, revokeBy }]
  }

  /** The holder used the worker (an RPC command went through): it is not idle. */
  activity(pool: string): void {
    if (this.holder?.pool === pool) this.holder.activeAt = this.now()
  }

  private lastActivity(holder: Lease & { activeAt?: number }): number {
    return holder.activeAt ?? holder.grantedAt
  }

  free(): boolean {
    return this.holder === undefined
  }

  /** An exclusive holder may use all the memory offered. */
  quota(): undefined {
    return undefined
  }

  /** Time each pool has used, decayed to now: the figure fairness is judged on. */
  usage(): Record<string, number> {
    const out: Record<string, number> = {}
    for (const name of this.pools.keys())
      out[name] = this.normalizedUse(name) * (this.pools.get(name)?.weight ?? 1)
    return out
  }

  /** A returning pool is owed at most maxDebtMs against the pools that kept demanding. */
  private boundDebt(pool: string, state: PoolState): void {
    const others = [...this.pools.entries()].filter(
      ([name, s]) => name !== pool && (s.waiting || this.holder?.pool === name)
    )
    if (others.length === 0) return
    const floor = Math.min(...others.map(([name]) => this.normalizedUse(name))) - this.maxDebtMs
    const t = this.now()
    this.decay(state, t)
    state.use = Math.max(state.use, floor * state.weight)
  }

  private terminate(reason: 'grace-expired' | 'lease-expired'): SchedulerAction[] {
    const lease = this.holder as Lease
    this.account(lease.pool)
    this.holder = undefined
    return [{ type: 'terminate', lease, reason }, ...this.grantNext()]
  }

  private grantNext(): SchedulerAction[] {
    const owed = this.mostOwed()
    return owed === undefined ? [] : [{ type: 'grant', lease: this.grant(owed) }]
  }

  private grant(pool: string): Lease {
    const t = this.now()
    const state = this.pools.get(pool) as PoolState
    this.decay(state, t)
    state.waiting = false
    this.holder = { id: this.nextId++, pool, grantedAt: t, renewedAt: t }
    return this.holder
  }

  /** The waiting pool with the least decayed use per unit of weight. */
  private mostOwed(): string | undefined {
    let best: string | undefined
    for (const [name, state] of this.pools) {
      if (!state.waiting || name === this.holder?.pool) continue
      if (best === undefined || this.normalizedUse(name) < this.normalizedUse(best)) best = name
    }
    return best
  }

  /** Use per unit of weight, counting the current holder's time so far. */
  private normalizedUse(pool: string): number {
    const state = this.pools.get(pool) as PoolState
    const t = this.now()
    let use = state.use * this.factor(t - state.usedAt)
    if (this.holder?.pool === pool) use += this.decayedSpan(this.holder.grantedAt, t)
    return use / state.weight
  }

  private account(pool: string): void {
    const state = this.pools.get(pool) as PoolState
    const t = this.now()
    const since = Math.max(this.holder?.grantedAt ?? t, state.usedAt)
    this.decay(state, t)
    state.use += this.decayedSpan(since, t)
  }

  private decay(state: PoolState, t: number): void {
    state.use *= this.factor(t - state.usedAt)
    state.usedAt = t
  }

  /** Time between from and to, each instant weighted by its decay to `to`. */
  private decayedSpan(from: number, to: number): number {
    const k = Math.LN2 / this.halfLifeMs
    return (1 - Math.exp(-k * (to - from))) / k
  }

  private factor(elapsed: number): number {
    return Math.pow(0.5, elapsed / this.halfLifeMs)
  }

  private estimateFree(): number {
    const holder = this.holder as Lease
    if (holder.revokeBy !== undefined) return holder.revokeBy
    return Math.max(holder.grantedAt + this.minSliceMs, this.now()) + this.graceMs
  }
}
