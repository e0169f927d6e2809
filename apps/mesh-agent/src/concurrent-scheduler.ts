import type { LeaseSharing } from '@frankenstein-mesh/protocol'
import type { LeasePolicy } from './lease-policy.ts'
import type { Lease, LeaseAnswer, PoolShare, SchedulerAction } from './lease-scheduler.ts'

export interface ConcurrentSchedulerInit {
  readonly pools: readonly PoolShare[]
  readonly now: () => number
  /** Memory the agent lends: split between the pools by weight. */
  readonly offeredBytes: number
  readonly leaseTtlMs?: number | undefined
  /** Lease ids start here (another policy beside this one numbers its own from 1). */
  readonly firstLeaseId?: number | undefined
}

/**
 * Concurrent sharing (issue 8, Level 2): every pool the agent joined may hold a lease at the same
 * time, its RPC sessions multiplexed onto the one rpc-server. The policy is simple on purpose:
 * each pool's memory quota is its weight's share of the offered memory, whether or not the other
 * pools are there (so a pool's quota never shrinks under it while its model is loaded). One lease
 * per pool: a second orchestrator of a pool that holds one waits in line, as with exclusive leases.
 */
export class ConcurrentScheduler implements LeasePolicy {
  readonly sharing: LeaseSharing = 'concurrent'
  private readonly now: () => number
  private readonly leaseTtlMs: number
  private readonly quotas = new Map<string, number>()
  private readonly leases = new Map<string, Lease & { renewedAt: number }>()
  /** Time each pool has held a lease, ended leases included. */
  private readonly held = new Map<string, number>()
  private nextId: number

  constructor(init: ConcurrentSchedulerInit) {
    this.now = init.now
    this.leaseTtlMs = init.leaseTtlMs ?? 60_000
    this.nextId = init.firstLeaseId ?? 1
    const weights = init.pools.reduce((sum, p) => sum + p.weight, 0)
    for (const pool of init.pools)
      this.quotas.set(pool.name, Math.floor((init.offeredBytes * pool.weight) / weights))
  }

  get current(): readonly Lease[] {
    return [...this.leases.values()]
  }

  /** `quotaBytes`: this lease's quota instead of the pool's weight share. */
  request(pool: string, _memory?: number, quotaBytes = this.quotas.get(pool)): LeaseAnswer {
    if (quotaBytes === undefined || !this.quotas.has(pool)) return { granted: false, reason: 'unknown-pool' }
    const held = this.leases.get(pool)
    if (held !== undefined) return { granted: true, lease: held }
    const t = this.now()
    const lease = { id: this.nextId++, pool, grantedAt: t, renewedAt: t, sharing: this.sharing, quotaBytes }
    this.leases.set(pool, lease)
    return { granted: true, lease }
  }

  renew(leaseId: number): boolean {
    const lease = this.byId(leaseId)
    if (lease !== undefined) lease.renewedAt = this.now()
    return lease !== undefined
  }

  release(leaseId: number): SchedulerAction[] {
    const lease = this.byId(leaseId)
    if (lease !== undefined) this.end(lease)
    return []
  }

  withdraw(): void {}

  /** Leases whose holders stopped renewing end: their sessions close, their buffers are freed. */
  tick(): SchedulerAction[] {
    const t = this.now()
    const expired = [...this.leases.values()].filter((l) => t - l.renewedAt > this.leaseTtlMs)
    return expired.map((lease) => {
      this.end(lease)
      return { type: 'terminate', lease, reason: 'lease-expired' } as const
    })
  }

  activity(): void {}

  usage(): Record<string, number> {
    const t = this.now()
    const out: Record<string, number> = {}
    for (const pool of this.quotas.keys()) {
      const lease = this.leases.get(pool)
      out[pool] = (this.held.get(pool) ?? 0) + (lease === undefined ? 0 : t - lease.grantedAt)
    }
    return out
  }

  free(pool: string): boolean {
    return !this.leases.has(pool)
  }

  quota(pool: string): number | undefined {
    return this.leases.get(pool)?.quotaBytes ?? this.quotas.get(pool)
  }

  private byId(leaseId: number): (Lease & { renewedAt: number }) | undefined {
    return [...this.leases.values()].find((l) => l.id === leaseId)
  }

  private end(lease: Lease): void {
    this.leases.delete(lease.pool)
    this.held.set(lease.pool, (this.held.get(lease.pool) ?? 0) + this.now() - lease.grantedAt)
  }
}
