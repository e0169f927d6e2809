import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  MAX_ADVERT_BYTES,
  PoolName,
  WorkerAdvert,
  decodeMessage,
  encodeMessage,
  rendezvousKey
} from '../src/index.ts'

const advert: WorkerAdvert = {
  type: 'advert',
  version: 1,
  pools: ['a', 'b-2'],
  memory: { offered: 8 * 1024 ** 3, free: 8 * 1024 ** 3 },
  accelerator: 'cpu',
  rpcProtocol: '6.0.0',
  lease: { state: 'idle' },
  at: 1_700_000_000_000,
  membership: {}
}

describe('decodeMessage', () => {
  it('round-trips a valid advert', () => {
    const bytes = encodeMessage(advert, MAX_ADVERT_BYTES)
    assert.deepEqual(decodeMessage(WorkerAdvert, bytes, MAX_ADVERT_BYTES), advert)
  })

  it('refuses an oversized message before parsing it', () => {
    const bytes = new TextEncoder().encode(`"${'x'.repeat(MAX_ADVERT_BYTES)}"`)
    assert.throws(() => decodeMessage(WorkerAdvert, bytes, MAX_ADVERT_BYTES), {
      code: 'ERR_MESSAGE_TOO_LARGE'
    })
  })

  it('refuses bytes that are not UTF-8 JSON', () => {
    assert.throws(() => decodeMessage(WorkerAdvert, new Uint8Array([0xff, 0xfe, 0x7b]), 100), {
      code: 'ERR_MESSAGE_MALFORMED'
    })
    assert.throws(() => decodeMessage(WorkerAdvert, new TextEncoder().encode('{"type":'), 100), {
      code: 'ERR_MESSAGE_MALFORMED'
    })
  })

  it('names the offending field of an invalid message', () => {
    const bad = encodeMessage({ ...advert, memory: { offered: -1, free: 0 } }, MAX_ADVERT_BYTES)
    assert.throws(
      () => decodeMessage(WorkerAdvert, bad, MAX_ADVERT_BYTES),
      (err: Error & { code?: string }) => {
        return err.code === 'ERR_MESSAGE_INVALID' && err.message.includes('memory.offered')
      }
    )
  })

  it('refuses a message of another type or version', () => {
    for (const other of [
      { ...advert, type: 'lease' },
      { ...advert, version: 2 }
    ]) {
      assert.throws(() => decodeMessage(WorkerAdvert, encodeMessage(other, 4096), 4096), {
        code: 'ERR_MESSAGE_INVALID'
      })
    }
  })
})

describe('PoolName', () => {
  it('accepts short lowercase names and refuses the rest', () => {
    for (const ok of ['a', 'pool-1', 'x'.repeat(63)]) assert.equal(PoolName.safeParse(ok).success, true, ok)
    for (const bad of ['', 'A', '-a', 'a b', 'a/b', 'x'.repeat(64), 'é'])
      assert.equal(PoolName.safeParse(bad).success, false, bad)
  })

  it('gives workers and orchestrators of a pool different rendezvous keys', () => {
    assert.notEqual(rendezvousKey('a', 'worker'), rendezvousKey('a', 'orchestrator'))
    assert.notEqual(rendezvousKey('a', 'worker'), rendezvousKey('b', 'worker'))
  })
})
