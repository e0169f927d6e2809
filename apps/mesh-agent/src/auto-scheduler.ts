import type { LeaseSharing } from '@frankenstein-mesh/protocol'
import { ConcurrentScheduler } from './concurrent-scheduler.ts'
import type { LeasePolicy } from './lease-policy.ts'
import { LeaseScheduler, type LeaseAnswer, type PoolShare, type SchedulerAction } from './lease-scheduler.ts'

export interface AutoSchedulerInit {
  readonly pools: readonly PoolShare[]
  readonly now: () => number
  readonly offeredBytes: number
  readonly minSliceMs?: number | undefined
  readonly graceMs?: number | undefined
  readonly leaseTtlMs?: number | undefined
  readonly idleMs?: number | undefined
}

/** Room each concurrent pool gets beyond what its plan said: llama-server's compute buffers. */
const headroom = (memory: number): number => Math.max(Math.ceil(memory * 0.1), 64 * 1024 ** 2)

/**
 * `--sharing auto` (issue 8, "choosing the level"): concurrent leases while the pools that ask fit
 * in the offered memory together, exclusive time slices when they do not. A pool fits when its
 * request says how much memory its plan needs here and that, with headroom (10%, at least 64 MiB),
 * fits beside the quotas of the pools holding leases; its quota is then that figure. A pool that
 * does not fit (or does not say) waits; the concurrent holders are revoked with notice once they
 * have had their minimum slice, and the exclusive scheduler takes over, with the waiting pools in
 * line, until nobody waits for it any more: then requests are judged for concurrency again.
 */
export class AutoScheduler implements LeasePolicy {
  private readonly now: () => number
  private readonly offered: number
  private readonly minSliceMs: number
  private readonly graceMs: number
  private readonly exclusive: LeaseScheduler
  private readonly concurrent: ConcurrentScheduler
  /** Pools waiting for the concurrent holders to leave, so that exclusive slices can start. */
  private readonly pending = new Set<string>()
  /** Concurrent leases asked to yield, and by when. */
  private readonly revoked = new Map<number, number>()

  constructor(init: AutoSchedulerInit) {
    this.now = init.now
    this.offered = init.offeredBytes
    this.minSliceMs = init.minSliceMs ?? 5 * 60_000
    this.graceMs = init.graceMs ?? 30_000
    this.exclusive = new LeaseScheduler(init)
    this.concurrent = new ConcurrentScheduler({ ...init, firstLeaseId: 1_000_000_000 })
  }

  /** The mode now: exclusive while a slice is held or pools wait for one. */
  get sharing(): LeaseSharing {
    return this.exclusive.current !== undefined || this.pending.size > 0 ? 'exclusive' : 'concurrent'
  }

  request(pool: string, memory?: number): LeaseAnswer {
    if (this.concurrent.quota(pool) === undefined) return { granted: false, reason: 'unknown-pool' }
    if (this.exclusive.current !== undefined) return this.exclusive.request(pool)
    const holders = this.concurrent.current
    const held = holders.find((l) => l.pool === pool)
    if (held !== undefined) return { granted: true, lease: held }
    const quota = memory === undefined ? undefined : memory + headroom(memory)
    const taken = holders.reduce((sum, l) => sum + (l.quotaBytes ?? 0), 0)
    if (this.pending.size === 0 && quota !== undefined && taken + quota <= this.offered)
      return this.concurrent.request(pool, memory, quota)
    if (holders.length === 0) {
      // Nobody to wait for: this pool's slice starts now, the others line up behind it.
      const answer = this.exclusive.request(pool)
      this.startSlices()
      return answer
    }
    this.pending.add(pool)
    return {
      granted: false,
      reason: 'busy',
      holder: (holders[0] as { pool: string }).pool,
      freeAt: this.freeAt()
    }
  }

  renew(leaseId: number): boolean {
    return this.concurrent.renew(leaseId) || this.exclusive.renew(leaseId)
  }

  release(leaseId: number): SchedulerAction[] {
    if (this.concurrent.current.some((l) => l.id === leaseId)) {
      this.concurrent.release(leaseId)
      this.revoked.delete(leaseId)
      return this.handOver()
    }
    return this.exclusive.release(leaseId)
  }

  withdraw(pool: string): void {
    this.pending.delete(pool)
    this.exclusive.withdraw(pool)
  }

  tick(): SchedulerAction[] {
    const actions: SchedulerAction[] = [...this.concurrent.tick(), ...this.exclusive.tick()]
    for (const a of actions) if (a.type === 'terminate') this.revoked.delete(a.lease.id)
    if (this.pending.size === 0) return actions
    const t = this.now()
    for (const lease of this.concurrent.current) {
      const by = this.revoked.get(lease.id)
      if (by === undefined && t - lease.grantedAt >= this.minSliceMs) {
        this.revoked.set(lease.id, t + this.graceMs)
        actions.push({ type: 'revoke', lease, revokeBy: t + this.graceMs })
      } else if (by !== undefined && t >= by) {
        this.concurrent.release(lease.id)
        this.revoked.delete(lease.id)
        actions.push({ type: 'terminate', lease, reason: 'grace-expired' })
      }
    }
    return [...actions, ...this.handOver()]
  }

  activity(pool: string): void {
    this.exclusive.activity(pool)
  }

  usage(): Record<string, number> {
    const a = this.exclusive.usage()
    const b = this.concurrent.usage()
    return Object.fromEntries(Object.keys(b).map((pool) => [pool, (a[pool] ?? 0) + (b[pool] ?? 0)]))
  }

  free(pool: string): boolean {
    return this.exclusive.current === undefined && this.pending.size === 0 && this.concurrent.free(pool)
  }

  /** A concurrent lease's quota; an exclusive holder may use all the memory offered. */
  quota(pool: string): number | undefined {
    return this.concurrent.current.find((l) => l.pool === pool)?.quotaBytes ?? this.offered
  }

  /** The concurrent holders are gone: the pools that waited line up for exclusive slices. */
  private handOver(): SchedulerAction[] {
    if (this.pending.size === 0 || this.concurrent.current.length > 0) return []
    return this.startSlices().flatMap((a) => (a.granted ? [{ type: 'grant', lease: a.lease } as const] : []))
  }

  /** The pools that waited ask the exclusive scheduler, in order: the first is granted at once. */
  private startSlices(): LeaseAnswer[] {
    const pools = [...this.pending]
    this.pending.clear()
    return pools.map((pool) => this.exclusive.request(pool))
  }

  private freeAt(): number {
    const t = this.now()
    const ends = this.concurrent.current.map(
      (l) => this.revoked.get(l.id) ?? Math.max(t, l.grantedAt + this.minSliceMs) + this.graceMs
    )
    return Math.max(t, ...ends)
  }
}
