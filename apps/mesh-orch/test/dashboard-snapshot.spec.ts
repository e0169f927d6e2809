import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  DashboardSnapshot,
  LinkRates,
  MAX_ROWS,
  MAX_TEXT,
  dashboardSnapshot
} from '../src/dashboard/snapshot.ts'
import { TokenMeter } from '../src/token-meter.ts'
import { peer, servingStatus, traffic } from './fixtures/status.ts'

describe('dashboardSnapshot', () => {
  it('joins the plan with its tunnels and RTTs, and marks each worker with its place in the plan', () => {
    const rates = new Map([[peer(1), { sentPerSecond: 100, receivedPerSecond: 20 }]])
    const s = DashboardSnapshot.parse(dashboardSnapshot(servingStatus(), rates, [], 5_000))
    assert.equal(s.model, 'tiny.gguf', 'the file name, not where it lives')
    assert.deepEqual(
      s.plan.map((p) => [p.peer, p.layers, p.holdsOutput, p.rttMs]),
      [
        [peer(1), [0, 3], false, 1],
        [peer(2), [4, 5], true, 2]
      ]
    )
    assert.deepEqual(s.plan[0]?.link, {
      connections: 1,
      sentBytes: 10_000,
      receivedBytes: 2_000,
      loadedBytes: 10_000,
      computes: 3,
      computeMs: 1.5,
      sentPerSecond: 100,
      receivedPerSecond: 20
    })
    assert.equal(s.plan[1]?.link?.sentPerSecond, null, 'no rate before two samples')
    assert.deepEqual(
      s.workers.map((w) => w.planIndex),
      [0, 1, null]
    )
    assert.deepEqual(s.credits, { earned: 0.25, spent: 0.1, receipts: 3, disputes: 1 })
    assert.deepEqual(s.requests, { inFlight: 1, queued: 2 })
  })

  it('shows a planned worker without a tunnel yet (while loading) with no link figures', () => {
    const s = dashboardSnapshot(servingStatus({ state: 'loading', tunnels: [] }), new Map(), [], 1)
    assert.deepEqual(
      s.plan.map((p) => p.link),
      [null, null]
    )
  })

  it('lists departed workers until they come back', () => {
    const departed = [
      { peer: peer(7), at: 900, reason: 'expired' },
      { peer: peer(3), at: 800, reason: 'expired' }
    ]
    const s = dashboardSnapshot(servingStatus(), new Map(), departed, 1_000)
    assert.deepEqual(
      s.departed.map((d) => d.peer),
      [peer(7)],
      'worker 3 is listed again, so it is not gone'
    )
  })

  it('cuts long free text (a llama-server error) instead of failing the whole snapshot', () => {
    const long = 'x'.repeat(3 * MAX_TEXT)
    const s = dashboardSnapshot(
      servingStatus({ lastPlanError: long }),
      new Map(),
      [{ peer: peer(7), at: 900, reason: long }],
      1_000
    )
    assert.ok(DashboardSnapshot.safeParse(s).success, 'the snapshot fits its schema')
    assert.equal(s.lastPlanError?.length, MAX_TEXT)
    assert.equal(s.departed[0]?.reason.length, MAX_TEXT)
  })

  it('caps the rows one message carries', () => {
    const many = Array.from({ length: MAX_ROWS + 50 }, (_, i) => ({
      ...(servingStatus().workers[2] as ReturnType<typeof servingStatus>['workers'][number]),
      peer: peer(100 + i)
    }))
    const s = DashboardSnapshot.parse(dashboardSnapshot(servingStatus({ workers: many }), new Map(), [], 1))
    assert.equal(s.workers.length, MAX_ROWS)
  })

  it('has a schema that refuses what the page cannot show', () => {
    const good = dashboardSnapshot(servingStatus(), new Map(), [], 1)
    assert.equal(DashboardSnapshot.safeParse({ ...good, version: 2 }).success, false)
    assert.equal(
      DashboardSnapshot.safeParse({ ...good, tokens: { generated: -1, perSecond: 0 } }).success,
      false
    )
  })
})

describe('LinkRates', () => {
  const tunnels = (sent: number, received: number) => [
    { peer: peer(1), connections: 1, traffic: traffic(sent, received) }
  ]

  it('averages bytes a second over about the window, and does not divide by milliseconds', () => {
    const rates = new LinkRates(2_000, 900)
    assert.equal(rates.update(tunnels(0, 0), 0).size, 0)
    assert.equal(rates.update(tunnels(500, 50), 100).size, 0, 'too soon: the same (empty) rates')
    assert.deepEqual(rates.update(tunnels(1_000, 100), 1_000).get(peer(1)), {
      sentPerSecond: 1_000,
      receivedPerSecond: 100
    })
    rates.update(tunnels(3_000, 300), 2_000)
    // The base is now the sample at 1 000 ms: (9 000 - 1 000) bytes over 2 s.
    assert.deepEqual(rates.update(tunnels(9_000, 900), 3_000).get(peer(1)), {
      sentPerSecond: 4_000,
      receivedPerSecond: 400
    })
  })

  it('restarts a rate when the counters went down (a new tunnel), and forgets samples after a quiet spell', () => {
    const rates = new LinkRates(2_000, 900)
    rates.update(tunnels(5_000, 500), 0)
    assert.equal(rates.update(tunnels(10, 1), 1_000).size, 0)
    assert.equal(rates.update(tunnels(2_000, 200), 60_000).size, 0, 'a minute-old base says nothing')
  })
})

describe('TokenMeter', () => {
  it('counts a total and a rate over the last whole seconds, ignoring nonsense', () => {
    let now = 10_000
    const meter = new TokenMeter(5, () => now)
    meter.add(10)
    meter.add(-3)
    meter.add(Number.NaN)
    now = 11_500
    meter.add(15)
    assert.equal(meter.total, 25)
    assert.equal(meter.perSecond(), 2, 'the current second is not counted yet')
    now = 12_000
    assert.equal(meter.perSecond(), 5)
    now = 16_100
    assert.equal(meter.perSecond(), 3, 'the first second left the window')
    now = 60_000
    assert.equal(meter.perSecond(), 0)
    assert.equal(meter.total, 25)
  })
})
