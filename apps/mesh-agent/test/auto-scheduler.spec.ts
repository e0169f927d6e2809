import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { AutoScheduler } from '../src/auto-scheduler.ts'

const MiB = 1024 ** 2

function scheduler(offeredBytes: number): { s: AutoScheduler; advance: (ms: number) => void } {
  let t = 1_000
  const s = new AutoScheduler({
    pools: [
      { name: 'a', weight: 1 },
      { name: 'b', weight: 1 }
    ],
    now: () => t,
    offeredBytes,
    minSliceMs: 10_000,
    graceMs: 3_000,
    leaseTtlMs: 60_000
  })
  return { s, advance: (ms) => (t += ms) }
}

describe('AutoScheduler', () => {
  it('grants concurrent leases while the pools fit together, each its need plus headroom', () => {
    const { s } = scheduler(2048 * MiB)
    const a = s.request('a', 100 * MiB)
    const b = s.request('b', 1000 * MiB)
    assert.ok(a.granted && b.granted)
    assert.equal(a.lease.sharing, 'concurrent')
    assert.equal(b.lease.sharing, 'concurrent')
    assert.equal(a.lease.quotaBytes, 100 * MiB + 64 * MiB)
    assert.equal(b.lease.quotaBytes, 1100 * MiB)
    assert.equal(s.sharing, 'concurrent')
  })

  it('falls back to exclusive slices when a pool does not fit: the holder is revoked after its slice', () => {
    const { s, advance } = scheduler(300 * MiB)
    const a = s.request('a', 150 * MiB)
    assert.ok(a.granted && a.lease.sharing === 'concurrent')
    const b = s.request('b', 150 * MiB)
    assert.equal(b.granted, false)
    assert.equal(s.sharing, 'exclusive')
    assert.deepEqual(s.tick(), [], 'a keeps its minimum slice')
    advance(10_000)
    const revoke = s.tick()
    assert.deepEqual(
      revoke.map((x) => [x.type, x.lease.pool]),
      [['revoke', 'a']]
    )
    const handOver = s.release(a.lease.id)
    assert.equal(handOver.length, 1)
    const grant = handOver[0]
    assert.ok(grant?.type === 'grant')
    assert.equal(grant.lease.pool, 'b')
    assert.equal(grant.lease.sharing, undefined, 'an exclusive lease')
    assert.equal(s.quota('b'), 300 * MiB, 'an exclusive holder may use all the memory')
    const again = s.request('a', 150 * MiB)
    assert.equal(again.granted, false, 'a waits in line for its slice')
  })

  it('ends a concurrent holder that does not yield by its deadline, then starts the slices', () => {
    const { s, advance } = scheduler(300 * MiB)
    assert.ok(s.request('a', 150 * MiB).granted)
    assert.equal(s.request('b').granted, false, 'a pool that does not say its memory is not judged to fit')
    advance(10_000)
    s.tick()
    advance(3_000)
    assert.deepEqual(
      s.tick().map((x) => [x.type, x.lease.pool]),
      [
        ['terminate', 'a'],
        ['grant', 'b']
      ]
    )
  })

  it('goes back to concurrent once nobody waits for a slice', () => {
    const { s } = scheduler(300 * MiB)
    const a = s.request('a', 400 * MiB)
    assert.ok(a.granted && a.lease.sharing === undefined, 'too big to share: an exclusive slice')
    assert.deepEqual(s.release(a.lease.id), [])
    assert.equal(s.sharing, 'concurrent')
    const b = s.request('b', 50 * MiB)
    assert.ok(b.granted && b.lease.sharing === 'concurrent')
  })
})
