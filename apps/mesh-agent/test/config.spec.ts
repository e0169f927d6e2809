import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ByteSize, JoinOptions, PoolWeight } from '../src/index.ts'

const base = { identity: '/tmp/x.key', listen: ['/ip4/127.0.0.1/tcp/0'] }

describe('join options', () => {
  it('reads pools with and without weights', () => {
    assert.deepEqual(PoolWeight.parse('a'), { name: 'a', weight: 1 })
    assert.deepEqual(PoolWeight.parse('b=2.5'), { name: 'b', weight: 2.5 })
    for (const bad of ['A', 'a=0', 'a=-1', 'a=x', 'a=1=2', '=2'])
      assert.equal(PoolWeight.safeParse(bad).success, false, bad)
  })

  it('reads memory sizes with units', () => {
    assert.equal(ByteSize.parse('8GiB'), 8 * 1024 ** 3)
    assert.equal(ByteSize.parse('512mb'), 512e6)
    assert.equal(ByteSize.parse('1024'), 1024)
    assert.equal(ByteSize.safeParse('eight gigs').success, false)
  })

  it('needs a pool, refuses the same pool twice, and refuses both rpc-server flags', () => {
    assert.equal(JoinOptions.safeParse({ ...base }).success, false)
    assert.equal(JoinOptions.safeParse({ ...base, pool: ['a', 'a=2'] }).success, false)
    assert.equal(
      JoinOptions.safeParse({ ...base, pool: ['a'], rpcPort: '5000', rpcServerBin: '/bin/x' }).success,
      false
    )
    const ok = JoinOptions.parse({ ...base, pool: ['a', 'b=2'], memory: '4GiB', rpcPort: '5000' })
    assert.deepEqual(ok.pool, [
      { name: 'a', weight: 1 },
      { name: 'b', weight: 2 }
    ])
    assert.equal(ok.rpcPort, 5000)
    assert.equal(ok.mdns, true)
  })

  it('shares rpc-server exclusively unless told concurrent or auto', () => {
    assert.equal(JoinOptions.parse({ ...base, pool: ['a'] }).sharing, 'exclusive')
    for (const sharing of ['concurrent', 'auto'])
      assert.equal(JoinOptions.parse({ ...base, pool: ['a'], sharing }).sharing, sharing)
    assert.equal(JoinOptions.safeParse({ ...base, pool: ['a'], sharing: 'shared' }).success, false)
  })
})
