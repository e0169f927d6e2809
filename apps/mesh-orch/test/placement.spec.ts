import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { layerDevices, type ModelLayout } from '@frankenstein-mesh/llama'
import { placedBytes, planPlacement, type Candidate } from '../src/index.ts'

const MiB = 1024 ** 2
const GiB = 1024 ** 3

/** 20 layers of 100 MiB, 50 MiB of output, 50 MiB of embeddings kept on the host. */
const layout: ModelLayout = {
  architecture: 'llama',
  layerCount: 20,
  layerBytes: Array.from({ length: 20 }, () => 100 * MiB),
  inputBytes: 50 * MiB,
  outputBytes: 50 * MiB,
  totalBytes: 2100 * MiB,
  kvBytesPerTokenPerLayer: 1024
}
const init = { layout, contextTokens: 4096, reserveBytes: 0, headroom: 0 }
const kvPerLayer = 1024 * 4096

describe('planPlacement', () => {
  it('uses one worker when one holds the model', () => {
    const result = planPlacement(
      [
        { id: 'big', offeredBytes: 8 * GiB, rttMs: 5 },
        { id: 'near', offeredBytes: 1 * GiB, rttMs: 1 }
      ],
      init
    )
    assert.ok(result.ok)
    assert.deepEqual(
      result.plan.workers.map((w) => w.id),
      ['big']
    )
    const [only] = result.plan.workers
    assert.deepEqual(only?.layers, [0, 19])
    assert.equal(only.holdsOutput, true)
  })

  it('picks, among the fewest workers that fit, those nearest', () => {
    const candidates: Candidate[] = [
      { id: 'far-a', offeredBytes: 1.5 * GiB, rttMs: 40 },
      { id: 'far-b', offeredBytes: 1.5 * GiB, rttMs: 30 },
      { id: 'near-a', offeredBytes: 1.2 * GiB, rttMs: 2 },
      { id: 'near-b', offeredBytes: 1.2 * GiB, rttMs: 3 }
    ]
    const result = planPlacement(candidates, init)
    assert.ok(result.ok)
    assert.deepEqual(
      result.plan.workers.map((w) => w.id),
      ['near-a', 'near-b']
    )
    assert.equal(result.plan.totalRttMs, 5)
  })

  it('never places more than a worker can hold, weights and KV cache together', () => {
    const candidates: Candidate[] = [
      { id: 'small', offeredBytes: 600 * MiB, rttMs: 1 },
      { id: 'medium', offeredBytes: 1 * GiB, rttMs: 2 },
      { id: 'large', offeredBytes: 4 * GiB, rttMs: 9 }
    ]
    const result = planPlacement(candidates, { ...init, reserveBytes: 64 * MiB, headroom: 0.1 })
    assert.ok(result.ok)
    for (const worker of result.plan.workers)
      assert.ok(
        worker.bytes <= worker.capacityBytes,
        `${worker.id}: ${worker.bytes} > ${worker.capacityBytes}`
      )
    const placed = result.plan.workers.reduce((sum, w) => sum + w.bytes, 0)
    assert.equal(placed, placedBytes(layout, 4096))
    assert.equal(placed, 20 * (100 * MiB + kvPerLayer) + 50 * MiB)
  })

  it('gives llama-server a split that puts the layers exactly where the plan says', () => {
    const candidates: Candidate[] = [
      { id: 'a', offeredBytes: 900 * MiB, rttMs: 1 },
      { id: 'b', offeredBytes: 1300 * MiB, rttMs: 2 }
    ]
    const result = planPlacement(candidates, init)
    assert.ok(result.ok)
    const devices = layerDevices(layout.layerCount, result.plan.tensorSplit)
    result.plan.workers.forEach((worker, i) => {
      const [first, last] = worker.layers ?? [-1, -1]
      assert.equal(devices.indexOf(i), first)
      assert.equal(devices.slice(0, 20).lastIndexOf(i), last)
    })
  })

  it('explains when the pool cannot hold the model', () => {
    const result = planPlacement([{ id: 'tiny', offeredBytes: 500 * MiB }], init)
    assert.ok(!result.ok)
    assert.match(result.reason, /needs \d+ MiB .* offer \d+ MiB/)
  })

  it('stays quick and sensible for a large pool', () => {
    const candidates = Array.from({ length: 40 }, (_, i) => ({
      id: `w${i}`,
      offeredBytes: (0.3 + (i % 7) * 0.1) * GiB,
      rttMs: 1 + (i % 11)
    }))
    const started = performance.now()
    const result = planPlacement(candidates, init)
    assert.ok(result.ok)
    assert.ok(result.plan.workers.length <= 4)
    assert.ok(performance.now() - started < 5_000)
  })
})
