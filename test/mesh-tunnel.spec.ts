import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { TINY_MODEL, silentLogger, startLlamaServer, type LlamaBinaries } from '@frankenstein-mesh/llama'
import {
  acquireLease,
  WorkerDirectory,
  createMeshNode,
  dialDiscovered,
  ephemeralPrivateKey,
  startRendezvous,
  type MeshNode
} from '@frankenstein-mesh/mesh'
import { startRpcTunnel, type RpcTunnel } from '@frankenstein-mesh/tunnel'
import { spawnAgent, type AgentProcess, loopbackJoinArgs } from './fixtures/agent-process.ts'
import { PROMPTS, createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'
import { credentialFor } from './fixtures/credentials.ts'

const logger = silentLogger()

async function waitForWorkers(directory: WorkerDirectory, count: number, timeoutMs: number): Promise<number> {
  const started = performance.now()
  while (directory.list().length < count) {
    if (performance.now() - started > timeoutMs)
      throw new Error(`only ${directory.list().length} of ${count} workers found`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return performance.now() - started
}

/** Greedy tokens through the tunnels must equal those of llama-server talking to the same rpc-servers directly. */
async function compareWithDirect(
  bins: LlamaBinaries,
  model: string,
  agents: AgentProcess[],
  tunnels: RpcTunnel[]
): Promise<void> {
  const run = async (rpc: string[]) => {
    const server = await startLlamaServer({
      binary: bins.llamaServer,
      model,
      logger,
      rpc,
      tensorSplit: [1, 1]
    })
    try {
      const out = []
      for (const prompt of PROMPTS) out.push(await greedyCompletion(server.url, prompt))
      return out
    } finally {
      await server.stop()
    }
  }
  const direct = await run(agents.map((a) => `127.0.0.1:${a.rpcPort}`))
  const tunneled = await run(tunnels.map((t) => t.endpoint))
  assert.deepEqual(
    tunneled.map((c) => c.tokens),
    direct.map((c) => c.tokens)
  )
  const traffic = tunnels.flatMap((t) => t.traffic())
  assert.ok(
    traffic.some((t) => (t.commands['SET_TENSOR'] ?? 0) > 0 && t.uploadBytes > 0),
    'weights went through the tunnels'
  )
}

describe('RPC through the mesh, found by discovery', { timeout: 240_000 }, () => {
  let bins: LlamaBinaries
  let scratch: Scratch
  let model: string
  const agents: AgentProcess[] = []
  const nodes: MeshNode[] = []
  const tunnels: RpcTunnel[] = []

  before(async () => {
    bins = await testBinaries()
    scratch = await createScratch('mesh')
    model = await scratch.model(TINY_MODEL)
  })
  after(async () => {
    await Promise.all(tunnels.map((t) => t.close()))
    await Promise.all(agents.map((a) => a.stop()))
    await Promise.all(
      nodes.map(async (n) => {
        await n.stop()
      })
    )
    await scratch.remove()
  })

  const agentArgs = (name: string, extra: string[]) => [
    '--pool',
    'tunnel-test',
    ...loopbackJoinArgs({ identity: join(scratch.dir, `${name}.key`), rpcServer: bins.rpcServer }),
    ...extra
  ]

  /** An orchestrator's node (loopback) that dials what it discovers and keeps a view of `pool`. */
  const orchestratorFor = async (
    pool: string,
    options: { mdns?: boolean; bootstrap?: string[]; expiryMs?: number } = {}
  ) => {
    const node = await createMeshNode({
      privateKey: await ephemeralPrivateKey(),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      mdns: options.mdns,
      mdnsIntervalMs: 500,
      bootstrap: options.bootstrap
    })
    nodes.push(node)
    const dial = dialDiscovered(node, logger)
    const directory = new WorkerDirectory({ node, pool, logger, refreshMs: 300, expiryMs: options.expiryMs })
    directory.start()
    return { node, dial, directory }
  }

  it('finds two agents by mDNS and gives the direct-RPC tokens through their tunnels', async () => {
    const { node: orchestrator, directory } = await orchestratorFor('tunnel-test', { mdns: true })
    const mdnsAgents = await Promise.all(['m1', 'm2'].map((n) => spawnAgent(agentArgs(n, []))))
    agents.push(...mdnsAgents)
    const ms = await waitForWorkers(directory, 2, 30_000)
    directory.stop()
    const found = directory
      .list()
      .map((w) => w.peer.toString())
      .sort()
    assert.deepEqual(found, mdnsAgents.map((a) => a.peerId).sort(), 'the directory lists exactly our agents')
    for (const worker of directory.list()) {
      assert.equal(worker.advert.rpcProtocol, '6.0.0')
      assert.ok(worker.advert.memory.offered > 0)
    }
    const byPeer = new Map(directory.list().map((w) => [w.peer.toString(), w.peer]))
    const ordered = mdnsAgents.map((a) => byPeer.get(a.peerId))
    for (const peer of ordered) {
      assert.ok(peer !== undefined)
      await acquireLease({
        node: orchestrator,
        peer,
        pool: 'tunnel-test',
        credential: await credentialFor(orchestrator, 'tunnel-test'),
        logger
      })
      tunnels.push(await startRpcTunnel({ node: orchestrator, peer, logger }))
    }
    await compareWithDirect(bins, model, mdnsAgents, tunnels.slice(-2))
    process.stderr.write(`# mDNS discovery: ${ms.toFixed(0)} ms from agents ready to both listed\n`)
  })

  it('finds agents through a bootstrap node and the DHT, with mDNS off', async () => {
    const bootstrap = await createMeshNode({
      privateKey: await ephemeralPrivateKey(),
      listen: ['/ip4/127.0.0.1/tcp/0']
    })
    nodes.push(bootstrap)
    const bootstrapAddr = bootstrap.getMultiaddrs()[0]?.toString() ?? ''
    const {
      node: orchestrator,
      dial,
      directory
    } = await orchestratorFor('dht-test', { bootstrap: [bootstrapAddr] })
    const rendezvous = startRendezvous({
      node: orchestrator,
      pools: ['dht-test'],
      role: 'orchestrator',
      logger,
      refreshMs: 1_000,
      onPeer: dial
    })
    const dhtAgents = await Promise.all(
      ['d1', 'd2'].map((n) =>
        spawnAgent([
          ...agentArgs(n, ['--no-mdns', '--bootstrap', bootstrapAddr, '--rendezvous-refresh', '1']).map(
            (a) => (a === 'tunnel-test' ? 'dht-test' : a)
          )
        ])
      )
    )
    agents.push(...dhtAgents)
    try {
      const ms = await waitForWorkers(directory, 2, 60_000)
      process.stderr.write(`# DHT discovery: ${ms.toFixed(0)} ms from agents ready to both listed\n`)
    } finally {
      rendezvous.stop()
      directory.stop()
    }
    assert.deepEqual(
      directory
        .list()
        .map((w) => w.peer.toString())
        .sort(),
      dhtAgents.map((a) => a.peerId).sort()
    )
    const peers = dhtAgents.map((a) => directory.get(a.peerId)?.peer)
    const dhtTunnels: RpcTunnel[] = []
    for (const peer of peers) {
      assert.ok(peer !== undefined)
      await acquireLease({
        node: orchestrator,
        peer,
        pool: 'dht-test',
        credential: await credentialFor(orchestrator, 'dht-test'),
        logger
      })
      dhtTunnels.push(await startRpcTunnel({ node: orchestrator, peer, logger }))
    }
    tunnels.push(...dhtTunnels)
    await compareWithDirect(bins, model, dhtAgents, dhtTunnels)
  })

  it('drops a worker from the view once it is gone', async () => {
    const { directory } = await orchestratorFor('expiry-test', { mdns: true, expiryMs: 1_500 })
    try {
      const agent = await spawnAgent(
        agentArgs('x1', []).map((a) => (a === 'tunnel-test' ? 'expiry-test' : a))
      )
      agents.push(agent)
      await waitForWorkers(directory, 1, 30_000)
      const removed = new Promise<string>((resolve) =>
        directory.once('removed', (_entry, reason) => resolve(reason))
      )
      await agent.stop('SIGKILL')
      const reason = await removed
      assert.equal(reason, 'expired')
      assert.equal(directory.list().length, 0)
    } finally {
      directory.stop()
    }
  })
})
