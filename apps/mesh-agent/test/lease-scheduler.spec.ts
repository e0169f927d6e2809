import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { LeaseScheduler, type PoolShare, type SchedulerAction } from '../src/lease-scheduler.ts'

const MINUTE = 60_000
const HOUR = 60 * MINUTE

interface Simulation {
  readonly held: Map<string, number>
  readonly switches: number
  readonly longestWait: Map<string, number>
}

/**
 * Simulated time in 1 s steps. `wants(pool, t)` says whether a pool's orchestrator wants the
 * worker; holders comply with revocations after `drainMs` and renew every step while they want it.
 */
function simulate(
  pools: PoolShare[],
  durationMs: number,
  wants: (pool: string, t: number) => boolean,
  drainMs = 5_000
): Simulation {
  let t = 0
  const scheduler = new LeaseScheduler({ pools, now: () => t, minSliceMs: 5 * MINUTE, graceMs: 30_000 })
  const held = new Map(pools.map((p) => [p.name, 0]))
  const longestWait = new Map(pools.map((p) => [p.name, 0]))
  const waitingSince = new Map<string, number>()
  let switches = 0
  let releaseAt: number | undefined
  const apply = (actions: SchedulerAction[]) => {
    for (const action of actions) {
      if (action.type === 'revoke') releaseAt = t + drainMs
      if (action.type === 'grant') switches++
    }
  }
  for (; t < durationMs; t += 1_000) {
    const holder = scheduler.current
    if (holder !== undefined) held.set(holder.pool, (held.get(holder.pool) ?? 0) + 1_000)
    for (const { name } of pools) {
      if (!wants(name, t)) {
        scheduler.withdraw(name)
        waitingSince.delete(name)
        if (holder?.pool === name) apply(scheduler.release(holder.id))
        continue
      }
      const answer = scheduler.request(name)
      if (answer.granted) {
        scheduler.renew(answer.lease.id)
        scheduler.activity(name)
        waitingSince.delete(name)
      } else {
        const since = waitingSince.get(name) ?? t
        waitingSince.set(name, since)
        longestWait.set(name, Math.max(longestWait.get(name) ?? 0, t - since))
      }
    }
    const current = scheduler.current
    if (releaseAt !== undefined && t >= releaseAt && current !== undefined) {
      releaseAt = undefined
      apply(scheduler.release(current.id))
    }
    apply(scheduler.tick())
  }
  return { held, switches, longestWait }
}

describe('LeaseScheduler', () => {
  it('shares a day 2:1 between two always-demanding pools weighted 2:1, within 5%', () => {
    const day = simulate(
      [
        { name: 'a', weight: 2 },
        { name: 'b', weight: 1 }
      ],
      24 * HOUR,
      () => true
    )
    const ratio = (day.held.get('a') ?? 0) / (day.held.get('b') ?? 1)
    assert.ok(Math.abs(ratio - 2) / 2 < 0.05, `a:b = ${ratio.toFixed(3)}`)
    assert.ok(day.switches < (24 * 60) / 5, 'never switches faster than the minimum slice')
  })

  it("gives an idle pool's time to the other", () => {
    const day = simulate(
      [
        { name: 'a', weight: 1 },
        { name: 'b', weight: 5 }
      ],
      6 * HOUR,
      (pool) => pool === 'a'
    )
    assert.equal(day.held.get('a'), 6 * HOUR - 1_000, 'all but the first simulated second')
    assert.equal(day.held.get('b'), 0)
  })

  it('hands the worker over as soon as the holder goes idle', () => {
    // a wants the worker for its first 20 minutes only; b from the start.
    const run = simulate(
      [
        { name: 'a', weight: 1 },
        { name: 'b', weight: 1 }
      ],
      2 * HOUR,
      (pool, t) => pool === 'b' || t < 20 * MINUTE
    )
    assert.ok((run.held.get('b') ?? 0) >= 2 * HOUR - 21 * MINUTE)
  })

  it('lets a pool that returns after a long idle catch up for a bounded time only', () => {
    // b is idle for a day, then both want the worker: b must not hold it for hours on its debt.
    const run = simulate(
      [
        { name: 'a', weight: 1 },
        { name: 'b', weight: 1 }
      ],
      30 * HOUR,
      (pool, t) => pool === 'a' || t >= 24 * HOUR
    )
    assert.ok(
      (run.longestWait.get('a') ?? Infinity) <= 40 * MINUTE,
      `a waited ${(run.longestWait.get('a') ?? 0) / MINUTE} min`
    )
    const bShare = (run.held.get('b') ?? 0) / (6 * HOUR)
    assert.ok(bShare > 0.5 && bShare < 0.65, `b had ${(bShare * 100).toFixed(0)}% of its 6 hours`)
  })

  it('revokes an idle holder at once when another pool waits, before its minimum slice', () => {
    let t = 0
    const scheduler = new LeaseScheduler({
      pools: [
        { name: 'a', weight: 10 },
        { name: 'b', weight: 1 }
      ],
      now: () => t,
      minSliceMs: HOUR,
      idleMs: 30_000
    })
    assert.ok(scheduler.request('a').granted)
    scheduler.request('b')
    t = 20_000
    scheduler.activity('a')
    t = 45_000
    assert.deepEqual(scheduler.tick(), [], 'used 25 s ago: not idle yet')
    t = 50_000
    assert.equal(scheduler.tick()[0]?.type, 'revoke')
  })

  it('starves no pool, however small its weight', () => {
    const day = simulate(
      [
        { name: 'big', weight: 50 },
        { name: 'small', weight: 1 }
      ],
      24 * HOUR,
      () => true
    )
    assert.ok((day.held.get('small') ?? 0) > 0)
    assert.ok(
      (day.longestWait.get('small') ?? Infinity) < 8 * HOUR,
      `small waited ${(day.longestWait.get('small') ?? 0) / HOUR} h`
    )
  })

  it('answers busy with the time the worker should be free, and refuses unknown pools', () => {
    let t = 0
    const scheduler = new LeaseScheduler({
      pools: [
        { name: 'a', weight: 1 },
        { name: 'b', weight: 1 }
      ],
      now: () => t,
      minSliceMs: 5 * MINUTE,
      graceMs: 30_000
    })
    assert.equal(scheduler.request('a').granted, true)
    t = MINUTE
    const busy = scheduler.request('b')
    assert.deepEqual(busy, { granted: false, reason: 'busy', holder: 'a', freeAt: 5 * MINUTE + 30_000 })
    assert.deepEqual(scheduler.request('nobody'), { granted: false, reason: 'unknown-pool' })
  })

  it('terminates a revoked holder that does not release within the grace', () => {
    let t = 0
    const scheduler = new LeaseScheduler({
      pools: [
        { name: 'a', weight: 1 },
        { name: 'b', weight: 1 }
      ],
      now: () => t,
      minSliceMs: MINUTE,
      graceMs: 10_000,
      leaseTtlMs: HOUR
    })
    const lease = scheduler.request('a')
    assert.ok(lease.granted)
    scheduler.request('b')
    t = MINUTE
    const [revoke] = scheduler.tick()
    assert.equal(revoke?.type, 'revoke')
    t = MINUTE + 9_000
    assert.deepEqual(scheduler.tick(), [])
    t = MINUTE + 10_000
    const actions = scheduler.tick()
    assert.deepEqual(
      actions.map((a) => a.type),
      ['terminate', 'grant']
    )
    assert.equal(actions[0]?.type === 'terminate' && actions[0].reason, 'grace-expired')
    assert.equal(scheduler.current?.pool, 'b')
  })

  it('expires a holder that vanished without a word', () => {
    let t = 0
    const scheduler = new LeaseScheduler({
      pools: [{ name: 'a', weight: 1 }],
      now: () => t,
      leaseTtlMs: 30_000
    })
    assert.ok(scheduler.request('a').granted)
    t = 31_000
    const [action] = scheduler.tick()
    assert.equal(action?.type === 'terminate' && action.reason, 'lease-expired')
    assert.equal(scheduler.current, undefined)
  })

  it('ignores a release or renewal of a lease that is not current', () => {
    let t = 0
    const scheduler = new LeaseScheduler({ pools: [{ name: 'a', weight: 1 }], now: () => t })
    const answer = scheduler.request('a')
    assert.ok(answer.granted)
    t = 1
    assert.equal(scheduler.renew(answer.lease.id + 1), false)
    assert.deepEqual(scheduler.release(answer.lease.id + 1), [])
    assert.equal(scheduler.current?.id, answer.lease.id)
  })
})
