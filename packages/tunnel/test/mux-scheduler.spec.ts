import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { fairShare, type MuxScheduler } from '../src/index.ts'

/**
 * A client like llama-server: one command at a time, the next `think` ms after the reply (a
 * chain), from `from` ms on until `to`. `cost`: ms of rpc-server work per command.
 */
interface Chain {
  readonly id: number
  readonly pool: string
  readonly cost: number
  readonly think: number
  readonly from?: number
  readonly to?: number
}

interface Served {
  at: number
  pool: string
  ms: number
}

/** A serial rpc-server on a fake clock: whom the scheduler serves, command by command. */
function simulate(
  make: (now: () => number) => MuxScheduler,
  chains: readonly Chain[],
  until: number
): Served[] {
  let t = 0
  const scheduler = make(() => t)
  const readyAt = new Map(chains.map((c) => [c.id, c.from ?? 0]))
  const served: Served[] = []
  const views = (c: Chain): { id: number; pool: string; label: string; queuedBytes: number } => ({
    id: c.id,
    pool: c.pool,
    label: '',
    queuedBytes: 1
  })
  for (let steps = 0; t < until && steps < 1_000_000; steps++) {
    const live = chains.filter((c) => (c.to ?? Infinity) > t)
    const ready = live.filter((c) => (readyAt.get(c.id) ?? 0) <= t).map(views)
    const picked = ready.length > 0 ? scheduler.pick(ready, []) : undefined
    const chain = chains.find((c) => c.id === picked?.id)
    if (chain === undefined) {
      const next = Math.min(...live.map((c) => readyAt.get(c.id) ?? 0).filter((at) => at > t), until)
      t = ready.length > 0 ? Math.min(t + (scheduler.holdMs ?? 1), next) : next
      continue
    }
    scheduler.charge?.(chain.pool, chain.cost)
    served.push({ at: t, pool: chain.pool, ms: chain.cost })
    t += chain.cost
    scheduler.charge?.(chain.pool, 0)
    readyAt.set(chain.id, t + chain.think)
  }
  return served
}

/** Each pool's share of the compute served in [from, to). */
function shares(served: readonly Served[], from = 0, to = Infinity): Map<string, number> {
  const inside = served.filter((s) => s.at >= from && s.at < to)
  const total = inside.reduce((sum, s) => sum + s.ms, 0)
  const out = new Map<string, number>()
  for (const s of inside) out.set(s.pool, (out.get(s.pool) ?? 0) + s.ms / total)
  return out
}

const near = (got: number | undefined, want: number, tolerance: number, what: string): void =>
  assert.ok(
    got !== undefined && Math.abs(got - want) <= tolerance,
    `${what}: ${got} not within ${want}±${tolerance}`
  )

const weights =
  (w: Record<string, number>) =>
  (pool: string): number | undefined =>
    w[pool]

describe('fair share scheduler', () => {
  it('gives two always-backlogged chains compute in proportion to their weights (2:1)', () => {
    const served = simulate(
      (now) => fairShare({ weight: weights({ a: 2, b: 1 }), now }),
      [
        { id: 1, pool: 'a', cost: 3, think: 0.5 },
        { id: 2, pool: 'b', cost: 3, think: 0.5 }
      ],
      10_000
    )
    near(shares(served).get('a'), 2 / 3, 0.02, "pool a's share")
  })

  it('follows the weights when the pools’ commands cost different times', () => {
    const served = simulate(
      (now) => fairShare({ weight: weights({ a: 1, b: 3 }), now }),
      [
        { id: 1, pool: 'a', cost: 7, think: 1 },
        { id: 2, pool: 'b', cost: 2, think: 1 }
      ],
      20_000
    )
    near(shares(served).get('b'), 3 / 4, 0.03, "pool b's share")
  })

  it('alternates two chains one command each when work-conserving (holdMs 0), whatever the weights', () => {
    const served = simulate(
      (now) => fairShare({ weight: weights({ a: 2, b: 1 }), holdMs: 0, now }),
      [
        { id: 1, pool: 'a', cost: 3, think: 0.5 },
        { id: 2, pool: 'b', cost: 3, think: 0.5 }
      ],
      10_000
    )
    near(shares(served).get('a'), 1 / 2, 0.02, "pool a's share without holding")
  })

  it('shares by weight among sessions that always have a command ready, even work-conserving', () => {
    const served = simulate(
      (now) => fairShare({ weight: weights({ a: 2, b: 1 }), holdMs: 0, now }),
      [
        { id: 1, pool: 'a', cost: 1, think: 0 },
        { id: 2, pool: 'b', cost: 1, think: 0 }
      ],
      3_000
    )
    near(shares(served).get('a'), 2 / 3, 0.01, "pool a's share")
  })

  it('lets a pool that was idle bank no credit: on its return it gets its share, not a burst', () => {
    const served = simulate(
      (now) => fairShare({ now }),
      [
        { id: 1, pool: 'a', cost: 2, think: 0 },
        { id: 2, pool: 'b', cost: 2, think: 0, to: 1_000 },
        { id: 3, pool: 'b', cost: 2, think: 0, from: 5_000 }
      ],
      6_000
    )
    near(shares(served, 1_000, 5_000).get('a'), 1, 1e-9, 'a alone while b is idle')
    // Had b banked its 4 s of idleness, it would hold the server alone for seconds after 5 s.
    near(shares(served, 5_000, 5_100).get('b'), 1 / 2, 0.05, "b's share right after its return")
  })

  it('serves a pool joining late at once and at its share, without starving the others', () => {
    const served = simulate(
      (now) => fairShare({ weight: weights({ a: 1, b: 1, c: 2 }), now }),
      [
        { id: 1, pool: 'a', cost: 2, think: 0.5 },
        { id: 2, pool: 'b', cost: 2, think: 0.5 },
        { id: 3, pool: 'c', cost: 2, think: 0.5, from: 4_000 }
      ],
      8_000
    )
    const first = served.find((s) => s.pool === 'c')
    assert.ok(first !== undefined && first.at < 4_010, `c first served at ${first?.at}`)
    const after = shares(served, 4_000, 8_000)
    near(after.get('c'), 1 / 2, 0.03, "c's share")
    near(after.get('a'), 1 / 4, 0.03, "a's share")
    near(after.get('b'), 1 / 4, 0.03, "b's share")
  })

  it('interleaves a big upload of one pool with the other pool’s commands', () => {
    // 1 MiB pieces (~0.5 ms each) of pool a, always ready; pool b's tokens cost 1 ms, 0.2 ms apart.
    const served = simulate(
      (now) => fairShare({ now }),
      [
        { id: 1, pool: 'a', cost: 0.5, think: 0 },
        { id: 2, pool: 'b', cost: 1, think: 0.2 }
      ],
      2_000
    )
    const waits = served
      .filter((s) => s.pool === 'b')
      .map((s, i, all) => (i === 0 ? s.at : s.at - ((all[i - 1]?.at ?? 0) + 1.2)))
    assert.ok(Math.max(...waits) < 1.5, `b waited up to ${Math.max(...waits)} ms for rpc-server`)
    near(shares(served).get('b'), 1 / 2, 0.03, "b's share")
  })
})
