import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { layerDevices, layerRanges } from '../src/index.ts'

describe('layerDevices', () => {
  it('counts the output layer as a slot, as llama.cpp does', () => {
    // 6 layers + output = 7 slots; 1:1 puts slots 0..3 (il/7 < 0.5) on the first device.
    assert.deepEqual(layerDevices(6, [1, 1]), [0, 0, 0, 0, 1, 1, 1])
    assert.deepEqual(layerRanges(6, [1, 1]), [
      [0, 3],
      [4, 5]
    ])
  })

  it('follows uneven shares', () => {
    assert.deepEqual(layerRanges(10, [3, 1]), [
      [0, 8],
      [9, 9]
    ])
    assert.deepEqual(layerRanges(6, [1, 2, 1]), [[0, 1], [2, 5], null])
  })

  it('leaves a device with a zero share empty', () => {
    assert.deepEqual(layerRanges(4, [0, 1]), [null, [0, 3]])
  })
})
