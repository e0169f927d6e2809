import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ConcurrentScheduler } from '../src/concurrent-scheduler.ts'

const GiB = 1024 ** 3

function scheduler(): { s: ConcurrentScheduler; advance: (ms: number) => void } {
  let t = 1_000
  const s = new ConcurrentScheduler({
    pools: [
      { name: 'a', weight: 2 },
      { name: 'b', weight: 1 }
    ],
    now: () => t,
    offeredBytes: 3 * GiB,
    leaseTtlMs: 10_000
  })
  return { s, advance: (ms) => (t += ms) }
}

describe('ConcurrentScheduler', () => {
  it('grants every pool a lease at once, each with its weight share of the offered memory', () => {
    const { s } = scheduler()
    const a = s.request('a')
    const b = s.request('b')
    assert.ok(a.granted && b.granted)
    assert.notEqual(a.lease.id, b.lease.id)
    assert.equal(a.lease.sharing, 'concurrent')
    assert.equal(a.lease.quotaBytes, 2 * GiB)
    assert.equal(b.lease.quotaBytes, 1 * GiB)
    assert.equal(s.quota('b'), 1 * GiB)
  })

  it('answers a second request of a pool with its lease, and refuses an unknown pool', () => {
    const { s } = scheduler()
    const first = s.request('a')
    const again = s.request('a')
    assert.ok(first.granted && again.granted)
    assert.equal(again.lease.id, first.lease.id)
    assert.equal(s.free('a'), false)
    assert.equal(s.free('b'), true)
    assert.deepEqual(s.request('c'), { granted: false, reason: 'unknown-pool' })
  })

  it('ends a lease that is not renewed, and only that one', () => {
    const { s, advance } = scheduler()
    const a = s.request('a')
    const b = s.request('b')
    assert.ok(a.granted && b.granted)
    advance(6_000)
    assert.ok(s.renew(b.lease.id))
    advance(6_000)
    const actions = s.tick()
    assert.deepEqual(
      actions.map((x) => [x.type, x.lease.pool]),
      [['terminate', 'a']]
    )
    assert.equal(s.free('a'), true)
    assert.equal(s.free('b'), false)
  })

  it('counts the time each pool held its lease, released ones included', () => {
    const { s, advance } = scheduler()
    const a = s.request('a')
    assert.ok(a.granted)
    advance(5_000)
    s.release(a.lease.id)
    s.request('b')
    advance(2_000)
    assert.deepEqual(s.usage(), { a: 5_000, b: 2_000 })
  })
})
