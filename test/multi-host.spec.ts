import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, it } from 'node:test'
import { TINY_MODEL, silentLogger, startLlamaServer, type LlamaBinaries } from '@frankenstein-mesh/llama'
import { spawnAgent, type AgentProcess } from './fixtures/agent-process.ts'
import { PROMPTS, createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'
import { createNetwork, netnsAvailable, type Host, type Network } from './fixtures/netns.ts'

const available = await netnsAvailable()
const skip = available.ok ? false : available.reason
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
const PROBE = join(import.meta.dirname, 'fixtures', 'orch-probe.ts')

interface ProbeResult {
  discovered: { ms: number; workers: Array<{ peerId: string; addresses: string[] }> }
  completions: number[][]
}

/**
 * Orchestrator, workers and a relay on hosts of their own (network namespaces on a bridge): the
 * discovery paths a real deployment has, and RPC through a relay where no direct route exists.
 */
describe('multi-host mesh', { skip, timeout: 300_000 }, () => {
  let network: Network
  let bins: LlamaBinaries
  let scratch: Scratch
  let model: string
  const expected: number[][] = []
  const agents: AgentProcess[] = []

  before(async () => {
    bins = await testBinaries()
    scratch = await createScratch('multihost')
    model = await scratch.model(TINY_MODEL)
    const local = await startLlamaServer({ binary: bins.llamaServer, model, logger: silentLogger() })
    try {
      for (const prompt of PROMPTS) expected.push([...(await greedyCompletion(local.url, prompt, 16)).tokens])
    } finally {
      await local.stop()
    }
    network = await createNetwork({ name: 'mesh', hosts: 4 })
  })
  after(async () => {
    await Promise.all(agents.map((a) => a.stop()))
    await network.destroy()
    await scratch.remove()
  })

  const host = (i: number): Host => network.hosts[i] as Host
  const agentIn = async (h: Host, name: string, args: string[]): Promise<AgentProcess> => {
    const agent = await spawnAgent(
      [
        '--identity',
        join(scratch.dir, `${name}.key`),
        '--listen',
        `/ip4/${h.address}/tcp/0`,
        '--rpc-server-bin',
        bins.rpcServer,
        ...args
      ],
      { command: ['ip', 'netns', 'exec', h.name, process.execPath, AGENT] }
    )
    agents.push(agent)
    return agent
  }
  const probeIn = async (h: Host, config: Record<string, unknown>): Promise<ProbeResult> => {
    const child = spawn('ip', ['netns', 'exec', h.name, process.execPath, PROBE, JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'inherit']
    })
    const events: Record<string, Record<string, unknown>> = {}
    createInterface({ input: child.stdout }).on('line', (line) => {
      const event = JSON.parse(line) as Record<string, unknown>
      events[String(event['event'])] = event
    })
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
    assert.equal(code, 0, `probe failed: ${JSON.stringify(events['failed'])}`)
    return {
      discovered: events['discovered'] as unknown as ProbeResult['discovered'],
      completions: (events['completions']?.['completions'] ?? []) as number[][]
    }
  }
  const probeConfig = (pool: string, h: Host, extra: Record<string, unknown>) => ({
    pool,
    listen: `/ip4/${h.address}/tcp/0`,
    workers: 2,
    timeoutMs: 60_000,
    llamaServer: bins.llamaServer,
    model,
    prompts: PROMPTS,
    ...extra
  })

  it('finds workers on other hosts of the LAN by mDNS and serves through them', async () => {
    const workers = await Promise.all([1, 2].map((i) => agentIn(host(i), `lan${i}`, ['--pool', 'lan'])))
    const result = await probeIn(host(0), probeConfig('lan', host(0), { mdns: true }))
    assert.deepEqual(
      result.discovered.workers.map((w) => w.peerId).sort(),
      workers.map((w) => w.peerId).sort()
    )
    assert.deepEqual(result.completions, expected)
    process.stderr.write(
      `# mDNS across namespaces: both workers listed ${result.discovered.ms} ms after the orchestrator started\n`
    )
  })

  it('finds workers through a bootstrap node and the DHT, with mDNS off everywhere', async () => {
    const bootstrap = await agentIn(host(3), 'boot', ['--pool', 'elsewhere', '--no-mdns'])
    const entry = bootstrap.addresses[0] ?? ''
    const workers = await Promise.all(
      [1, 2].map((i) =>
        agentIn(host(i), `dht${i}`, [
          '--pool',
          'dht',
          '--no-mdns',
          '--bootstrap',
          entry,
          '--rendezvous-refresh',
          '1'
        ])
      )
    )
    const result = await probeIn(host(0), probeConfig('dht', host(0), { bootstrap: [entry] }))
    assert.deepEqual(
      result.discovered.workers.map((w) => w.peerId).sort(),
      workers.map((w) => w.peerId).sort()
    )
    assert.deepEqual(result.completions, expected)
    process.stderr.write(
      `# DHT across namespaces: both workers listed ${result.discovered.ms} ms after the orchestrator started\n`
    )
  })

  it('reaches a worker it cannot dial through a relay, and serves through it', async () => {
    await network.isolate(host(0), host(2))
    const relay = await agentIn(host(3), 'relay', [
      '--pool',
      'relayed-elsewhere',
      '--no-mdns',
      '--relay-server'
    ])
    const entry = relay.addresses[0] ?? ''
    const common = ['--pool', 'relayed', '--no-mdns', '--bootstrap', entry, '--rendezvous-refresh', '1']
    const direct = await agentIn(host(1), 'reachable', common)
    const hidden = await agentIn(host(2), 'hidden', [...common, '--relay-listen'])
    const result = await probeIn(host(0), probeConfig('relayed', host(0), { bootstrap: [entry] }))
    const byPeer = new Map(result.discovered.workers.map((w) => [w.peerId, w.addresses]))
    assert.ok(
      byPeer.get(hidden.peerId)?.every((a) => a.includes('/p2p-circuit')),
      `relayed: ${JSON.stringify(byPeer.get(hidden.peerId))}`
    )
    assert.ok(byPeer.get(direct.peerId)?.some((a) => !a.includes('/p2p-circuit')))
    assert.deepEqual(result.completions, expected)
  })
})
