import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { RpcCommand } from '@frankenstein-mesh/llama'
import { ComputeMeter } from '../src/mux-compute-meter.ts'

describe('compute meter', () => {
  it('charges a replied command the time from its forwarding to its reply', () => {
    const meter = new ComputeMeter()
    meter.forwarded('a', RpcCommand.GetTensor, 100, true, 10)
    assert.deepEqual(
      meter.replied(13).map((c) => [c.pool, c.ms]),
      [['a', 3]]
    )
  })

  it('starts the next command at the previous reply when it was queued behind it', () => {
    const meter = new ComputeMeter()
    meter.forwarded('a', RpcCommand.GetTensor, 100, true, 0)
    meter.forwarded('b', RpcCommand.GetTensor, 100, true, 1)
    meter.replied(5)
    assert.deepEqual(
      meter.replied(7).map((c) => [c.pool, c.ms]),
      [['b', 2]]
    )
  })

  it('gives commands without a reply their share of the next reply, and learns graph times', () => {
    const meter = new ComputeMeter()
    for (let i = 0; i < 30; i++) {
      const t = i * 100
      meter.forwarded('a', RpcCommand.GraphCompute, 1000, false, t)
      meter.forwarded(null, RpcCommand.DeviceCount, 9, true, t)
      meter.replied(t + 10)
    }
    assert.ok(!meter.unmeasured, 'every graph was followed by a reply')
    meter.forwarded('a', RpcCommand.GraphCompute, 1000, false, 5000)
    assert.ok(meter.unmeasured, 'a graph awaits a reply to be measured')
    meter.forwarded('b', RpcCommand.GetTensor, 100, true, 5000)
    const [graph, get] = meter.replied(5010.5)
    assert.ok(graph !== undefined && get !== undefined)
    assert.ok(graph.ms > 9.5 && get.ms < 1, `graph ${graph.ms} ms, get ${get.ms} ms`)
    assert.ok(Math.abs(graph.ms + get.ms - 10.5) < 1e-9, 'the whole busy time is shared out')
  })
})
