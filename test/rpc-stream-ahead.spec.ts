/**
 * The tunnel opens its next RPC stream ahead of need (a stream costs a round trip to open, and
 * llama-server opens its connections one after another); the agent connects such a stream to
 * rpc-server only when bytes come. Real agent, real rpc-server, real libp2p.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { connectRpc, silentLogger } from '@frankenstein-mesh/llama'
import { peerIdFromString, type MeshNode } from '@frankenstein-mesh/mesh'
import { PROTOCOL } from '@frankenstein-mesh/protocol'
import { startRpcTunnel, type RpcTunnel } from '@frankenstein-mesh/tunnel'
import type { AgentProcess } from './fixtures/agent-process.ts'
import { leasedAgent } from './fixtures/leased-agent.ts'

describe('RPC streams opened ahead', { timeout: 120_000 }, () => {
  /** What `before` started, in order: `after` ends it in reverse, however far `before` got. */
  const started: Array<() => unknown> = []
  let agent: AgentProcess
  let node: MeshNode
  let tunnel: RpcTunnel

  /** Our RPC streams to the agent, open or half-closed. */
  const rpcStreams = (): number =>
    node
      .getConnections(peerIdFromString(agent.peerId))
      .flatMap((c) => c.streams)
      .filter((s) => s.protocol === PROTOCOL.rpc && s.status === 'open').length
  const until = async (what: string, check: () => boolean): Promise<void> => {
    const deadline = Date.now() + 10_000
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  before(async () => {
    const leased = await leasedAgent('ahead')
    started.push(() => leased.stop())
    ;({ agent, node } = leased)
    tunnel = await startRpcTunnel({ node, peer: leased.peer, logger: silentLogger() })
    started.push(() => tunnel.close())
  })
  after(async () => {
    for (const end of started.reverse()) await end()
  })

  it('holds one stream open before any connection, without taking rpc-server', async () => {
    await until('the stream opened ahead', () => rpcStreams() === 1)
    assert.equal(tunnel.open, 0)
    // rpc-server serves one connection at a time: had the idle stream been connected to it, this
    // client would wait behind it and time out.
    const direct = await connectRpc({ port: agent.rpcPort, timeoutMs: 3_000 })
    assert.equal(await direct.deviceCount(), 1)
    direct.close()
  })

  it('gives each connection in turn the stream opened ahead, and opens the next', async () => {
    for (let i = 0; i < 5; i++) {
      const client = await connectRpc({ port: tunnel.port, timeoutMs: 5_000 })
      assert.equal(await client.deviceCount(), 1)
      // The one in use, and the next one opened ahead.
      await until('a new stream opened ahead', () => rpcStreams() === 2)
      client.close()
      await until('the used stream to end', () => rpcStreams() === 1)
    }
    assert.equal(tunnel.traffic().length, 5)
  })

  it('opens a stream of its own when the one ahead was lost', async () => {
    for (const stream of node
      .getConnections(peerIdFromString(agent.peerId))
      .flatMap((c) => c.streams)
      .filter((s) => s.protocol === PROTOCOL.rpc))
      stream.abort(new Error('test: lost'))
    await until('no rpc stream left', () => rpcStreams() === 0)
    const client = await connectRpc({ port: tunnel.port, timeoutMs: 5_000 })
    assert.equal(await client.deviceCount(), 1)
    client.close()
  })

  it('closes the stream opened ahead with the tunnel', async () => {
    await until('the stream opened ahead', () => rpcStreams() === 1)
    await tunnel.close()
    await until('no rpc stream left', () => rpcStreams() === 0)
  })
})
