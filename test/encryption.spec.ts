import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import {
  TINY_MODEL,
  readGguf,
  silentLogger,
  startLlamaServer,
  startRpcServer,
  type GgufInfo,
  type RpcServer
} from '@frankenstein-mesh/llama'
import {
  acquireLease,
  createMeshNode,
  ephemeralPrivateKey,
  multiaddr,
  peerIdFromString,
  type MeshNode
} from '@frankenstein-mesh/mesh'
import { startRpcTunnel, type RpcTunnel } from '@frankenstein-mesh/tunnel'
import { spawnAgent, type AgentProcess } from './fixtures/agent-process.ts'
import { createScratch, testBinaries, type Scratch } from './fixtures/llama.ts'
import { startRecordingRelay, type RecordingRelay } from './fixtures/recording-relay.ts'
import { credentialFor } from './fixtures/credentials.ts'

/** A slice of a tensor's bytes, long enough that finding it by chance is impossible. */
async function tensorSample(
  model: string,
  info: GgufInfo,
  name: string,
  at = 0,
  length = 64
): Promise<Buffer> {
  const tensor = info.tensors.find((t) => t.name === name)
  assert.ok(tensor !== undefined, name)
  const bytes = await readFile(model)
  return bytes.subarray(tensor.offset + at, tensor.offset + at + length)
}

/**
 * Proof that the mesh leg is encrypted: with a recorder on the wire between orchestrator and
 * agent, and another on the plain loopback leg between agent and rpc-server, a model load and a
 * completion leave weight bytes and the prompt's embeddings on the loopback leg only.
 */
describe('what crosses the network', { timeout: 180_000 }, () => {
  const logger = silentLogger()
  const prompt = 'Frankenstein secret prompt: the mesh of many machines'
  let scratch: Scratch
  let model: string
  let info: GgufInfo
  let rpc: RpcServer
  let loopbackLeg: RecordingRelay
  let meshLeg: RecordingRelay
  let agent: AgentProcess
  let orchestrator: MeshNode
  let tunnel: RpcTunnel
  let tokenIds: number[] = []

  before(async () => {
    const bins = await testBinaries()
    scratch = await createScratch('encryption')
    model = await scratch.model(TINY_MODEL)
    info = await readGguf(model)
    rpc = await startRpcServer({ binary: bins.rpcServer, logger })
    loopbackLeg = await startRecordingRelay(rpc.port)
    agent = await spawnAgent([
      '--pool',
      'secret',
      '--identity',
      join(scratch.dir, 'agent.key'),
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--no-mdns',
      '--rpc-port',
      String(loopbackLeg.port)
    ])
    const agentPort = /\/tcp\/(\d+)\//.exec(agent.addresses[0] ?? '')?.[1]
    meshLeg = await startRecordingRelay(Number(agentPort))
    orchestrator = await createMeshNode({
      privateKey: await ephemeralPrivateKey(),
      listen: ['/ip4/127.0.0.1/tcp/0']
    })
    await orchestrator.dial(multiaddr(`/ip4/127.0.0.1/tcp/${meshLeg.port}/p2p/${agent.peerId}`))
    await acquireLease({
      node: orchestrator,
      peer: peerIdFromString(agent.peerId),
      pool: 'secret',
      credential: await credentialFor(orchestrator, 'secret'),
      logger
    })
    tunnel = await startRpcTunnel({ node: orchestrator, peer: peerIdFromString(agent.peerId), logger })
    const llama = await startLlamaServer({ binary: bins.llamaServer, model, logger, rpc: [tunnel.endpoint] })
    try {
      const tokenized = await fetch(`${llama.url}/tokenize`, {
        method: 'POST',
        body: JSON.stringify({ content: prompt })
      })
      tokenIds = ((await tokenized.json()) as { tokens: number[] }).tokens
      const res = await fetch(`${llama.url}/completion`, {
        method: 'POST',
        body: JSON.stringify({ prompt, n_predict: 8, temperature: 0 })
      })
      assert.equal(res.status, 200)
      await res.text()
    } finally {
      await llama.stop()
    }
  })

  after(async () => {
    await tunnel.close()
    await orchestrator.stop()
    await agent.stop()
    await meshLeg.close()
    await loopbackLeg.close()
    await rpc.stop()
    await scratch.remove()
  })

  it('went through the recorded mesh leg, and nothing bypassed it', () => {
    const mesh = meshLeg.recorded()
    assert.ok(
      mesh.upstream.length > info.tensors.reduce((a, t) => a + t.size, 0) / 2,
      'the model upload crossed the mesh leg'
    )
    assert.equal(
      orchestrator.getConnections().every((c) => c.remoteAddr.toString().includes(`/tcp/${meshLeg.port}/`)),
      true
    )
  })

  it('carries weights in the clear to rpc-server, and never on the mesh leg', async () => {
    for (const name of ['blk.0.attn_q.weight', 'blk.5.ffn_down.weight', 'output.weight']) {
      const sample = await tensorSample(model, info, name, 4096)
      assert.ok(loopbackLeg.recorded().upstream.includes(sample), `${name} on the loopback leg`)
      assert.ok(!meshLeg.recorded().upstream.includes(sample), `${name} must not cross the mesh in the clear`)
    }
  })

  it('never shows the prompt on the mesh leg: not as text, not as its embeddings', async () => {
    const embedding = info.tensors.find((t) => t.name === 'token_embd.weight')
    assert.ok(embedding !== undefined)
    const rowBytes = TINY_MODEL.embedding * 4
    const promptToken = tokenIds.at(-1) ?? 0
    const row = await tensorSample(model, info, 'token_embd.weight', promptToken * rowBytes, rowBytes)
    assert.ok(
      loopbackLeg.recorded().upstream.includes(row),
      "the prompt's embedding row reaches rpc-server in the clear"
    )
    const mesh = Buffer.concat([meshLeg.recorded().upstream, meshLeg.recorded().downstream])
    assert.ok(!mesh.includes(row), 'embedding row on the mesh leg')
    assert.ok(!mesh.includes(Buffer.from('Frankenstein secret prompt')), 'prompt text on the mesh leg')
  })
})
