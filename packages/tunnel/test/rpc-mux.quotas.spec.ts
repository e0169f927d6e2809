import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { RpcCommand, silentLogger } from '@frankenstein-mesh/llama'
import { listenRpcMux, startRpcMux, type MuxListener, type RpcMux } from '../src/index.ts'
import { Client, FakeRpcServer, u32, until } from './fixtures/fake-rpc-server.ts'

/** GET_DEVICE_MEMORY of device 0: `[free, total]`. */
async function memory(client: Client): Promise<[bigint, bigint]> {
  client.send(RpcCommand.GetDeviceMemory, u32(0))
  const reply = await client.read(16)
  return [reply.readBigUInt64LE(0), reply.readBigUInt64LE(8)]
}

describe('RPC multiplexer memory quotas', () => {
  let upstream: FakeRpcServer
  let mux: RpcMux
  const listeners: MuxListener[] = []
  const clients: Client[] = []
  const client = async (pool: 'a' | 'b'): Promise<Client> => {
    const c = new Client((listeners[pool === 'a' ? 0 : 1] as MuxListener).port)
    clients.push(c)
    await c.hello()
    return c
  }

  before(async () => {
    upstream = new FakeRpcServer()
    await upstream.start()
    mux = await startRpcMux({
      upstreamPort: upstream.port,
      logger: silentLogger(),
      quota: (pool) => (pool === 'a' ? 1000 : undefined)
    })
    listeners.push(await listenRpcMux(mux, { pool: 'a' }), await listenRpcMux(mux, { pool: 'b' }))
  })

  after(async () => {
    for (const c of clients) c.socket.destroy()
    await Promise.all(listeners.map((l) => l.close()))
    mux.close()
    await upstream.stop()
  })

  it("shows each pool its quota as the device's memory, less what the pool holds", async () => {
    const a = await client('a')
    assert.deepEqual(await memory(a), [1000n, 1000n])
    assert.notEqual((await a.alloc(600n)).ptr, 0n)
    assert.deepEqual(await memory(a), [400n, 1000n])
    const b = await client('b')
    assert.deepEqual(await memory(b), [1n << 30n, 2n << 30n], 'a pool without a quota sees the device')
  })

  it('fails an allocation past the quota for that pool alone, across its sessions', async () => {
    const a2 = await client('a')
    const allocsBefore = upstream.of(RpcCommand.AllocBuffer).length
    assert.equal((await a2.alloc(600n)).ptr, 0n, 'out of memory for pool a')
    assert.equal(upstream.of(RpcCommand.AllocBuffer).length, allocsBefore, 'never reached rpc-server')
    assert.notEqual((await a2.alloc(300n)).ptr, 0n, 'the session goes on within its quota')
    const b = await client('b')
    assert.notEqual((await b.alloc(1n << 20n)).ptr, 0n, 'pool b is not limited by pool a')
    const a = mux.pools().find((p) => p.pool === 'a')
    assert.deepEqual(a && { held: a.heldBytes, quota: a.quota }, { held: 900, quota: 1000 })
    assert.ok(mux.sessions().some((s) => s.pool === 'a' && s.refusedAllocs === 1))
  })

  it("gives a pool its quota back when a session's buffers are freed", async () => {
    const first = clients[0] as Client
    first.socket.destroy()
    await until('the 600 bytes freed', () => mux.pools().find((p) => p.pool === 'a')?.heldBytes === 300)
    const a3 = await client('a')
    assert.notEqual((await a3.alloc(600n)).ptr, 0n)
  })
})
