import type { LeaseSharing } from '@frankenstein-mesh/protocol'
import type { LeaseAnswer, SchedulerAction } from './lease-scheduler.ts'

/**
 * Who gets the worker's rpc-server, and when: exclusive time slices (`LeaseScheduler`) or
 * concurrent leases beside each other (`ConcurrentScheduler`). The lease service speaks to either.
 */
export interface LeasePolicy {
  readonly sharing: LeaseSharing
  /** `memory`: the bytes the pool's plan places here, when its orchestrator says. */
  request(pool: string, memory?: number): LeaseAnswer
  renew(leaseId: number): boolean
  release(leaseId: number): SchedulerAction[]
  withdraw(pool: string): void
  tick(): SchedulerAction[]
  activity(pool: string): void
  usage(): Record<string, number>
  /** Whether a pool waiting in line may ask again now: nothing in the policy stands in its way. */
  free(pool: string): boolean
  /** Buffer bytes the pool may hold in rpc-server (concurrent sharing). */
  quota(pool: string): number | undefined
}
