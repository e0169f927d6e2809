import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { silentLogger } from '@frankenstein-mesh/llama'
import { MuxHost } from '../src/mux-host.ts'
// The stand-in rpc-server of the tunnel package's tests: this is a unit test of the host's recovery.
import { FakeRpcServer } from '../../../packages/tunnel/test/fixtures/fake-rpc-server.ts'

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('the multiplexer host', () => {
  const upstream = new FakeRpcServer()
  let allowed = true
  let host: MuxHost

  before(async () => {
    await upstream.start()
    host = new MuxHost({
      upstreamPort: () => upstream.port,
      pools: ['a'],
      quota: () => undefined,
      weight: () => 1,
      logger: silentLogger(),
      reconnect: () => allowed
    })
    await host.start()
  })
  after(async () => {
    host.stop()
    await upstream.stop()
  })

  it('reconnects by itself when the connection to a running rpc-server ends', async () => {
    assert.equal(host.view().up, true)
    upstream.dropClients()
    await until('the multiplexer down', () => !host.view().up)
    await until('the multiplexer back', () => host.view().up)
    assert.ok(host.attacher('a', 'test') !== undefined, 'sessions can attach again')
  })

  it('stays down while reconnecting is not allowed (a supervised rpc-server restarting)', async () => {
    allowed = false
    upstream.dropClients()
    await until('the multiplexer down', () => !host.view().up)
    await new Promise((resolve) => setTimeout(resolve, 1_500)) // past the first retry, were there one
    assert.equal(host.view().up, false)
    assert.equal(host.attacher('a', 'test'), undefined)
    await host.restart() // what the supervisor's `restored` does
    assert.equal(host.view().up, true)
  })
})
