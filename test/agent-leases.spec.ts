import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import {
  TINY_MODEL,
  connectRpc,
  silentLogger,
  startLlamaServer,
  type LlamaBinaries
} from '@frankenstein-mesh/llama'
import {
  acquireLease,
  createMeshNode,
  ephemeralPrivateKey,
  multiaddr,
  peerIdFromString
} from '@frankenstein-mesh/mesh'
import { startRpcTunnel } from '@frankenstein-mesh/tunnel'
import { spawnAgent, type AgentProcess, loopbackJoinArgs } from './fixtures/agent-process.ts'
import {
  startLeasingOrchestrator,
  type LeaseEvent,
  type LeasingOrchestrator
} from './fixtures/leasing-orchestrator.ts'
import { createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'
import { credentialFor } from './fixtures/credentials.ts'

const run = promisify(execFile)
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
const PROMPTS = [
  'one worker',
  'two pools',
  'fair slices',
  'no reload lost',
  'a lease, then another',
  'the mesh holds'
]

interface Status {
  pools: Array<{ name: string; usageMs: number; traffic: { computes: number; memoryGiBs: number } }>
  rpcServer: { port: number; pid?: number; state: string; restarts: number; lastLoss: string | null }
}

describe('one agent, two pools, exclusive leases', { timeout: 240_000 }, () => {
  let bins: LlamaBinaries
  let scratch: Scratch
  let model: string
  let agent: AgentProcess
  const expected = new Map<string, number[]>()
  const orchestrators: LeasingOrchestrator[] = []
  const status = async (): Promise<Status> => {
    const { stdout } = await run(process.execPath, [
      AGENT,
      'status',
      '--identity',
      join(scratch.dir, 'agent.key'),
      '--json'
    ])
    return JSON.parse(stdout) as Status
  }

  before(async () => {
    bins = await testBinaries()
    scratch = await createScratch('leases')
    model = await scratch.model(TINY_MODEL)
    const local = await startLlamaServer({ binary: bins.llamaServer, model, logger: silentLogger() })
    try {
      for (const prompt of PROMPTS)
        expected.set(prompt, [...(await greedyCompletion(local.url, prompt, 12)).tokens])
    } finally {
      await local.stop()
    }
    agent = await spawnAgent([
      '--pool',
      'a',
      '--pool',
      'b',
      ...loopbackJoinArgs({
        identity: join(scratch.dir, 'agent.key'),
        rpcServer: bins.rpcServer,
        mdns: false
      }),
      '--min-slice',
      '4',
      '--grace',
      '3',
      '--lease-ttl',
      '5'
    ])
  })
  after(async () => {
    await Promise.all(orchestrators.map((o) => o.stop()))
    await agent.stop()
    await scratch.remove()
  })

  it('gives both pools their slices, with notice, and loses no request', async () => {
    const start = (pool: string) =>
      startLeasingOrchestrator({
        pool,
        agentAddress: agent.addresses[0] ?? '',
        llamaServer: bins.llamaServer,
        model
      })
    const a = await start('a')
    orchestrators.push(a)
    while (!a.events.some((e) => e.type === 'granted')) await new Promise((r) => setTimeout(r, 50))
    const b = await start('b')
    orchestrators.push(b)

    // Requests keep arriving for both pools for a while; each must come back, correct.
    const results: Array<Promise<[string, number[]]>> = []
    for (let round = 0; round < 4; round++) {
      for (const prompt of PROMPTS.slice(0, 3)) {
        for (const orchestrator of [a, b])
          results.push(orchestrator.complete(prompt).then((tokens) => [prompt, tokens]))
      }
      await new Promise((r) => setTimeout(r, 4_000))
    }
    for (const [prompt, tokens] of await Promise.all(results))
      assert.deepEqual(tokens, expected.get(prompt), prompt)

    const busy = b.events.find((e) => e.type === 'busy')
    assert.ok(busy !== undefined, 'b was told at once that the worker was busy')
    assert.ok(Number(busy.detail) >= busy.at, 'with the time it should be free')
    for (const orchestrator of [a, b]) {
      assert.ok(
        orchestrator.events.filter((e) => e.type === 'granted').length >= 2,
        `slices: ${timeline(orchestrator.events)}`
      )
      for (const [i, event] of orchestrator.events.entries()) {
        if (event.type !== 'revoked') continue
        const released = orchestrator.events.slice(i).find((e) => e.type === 'released')
        assert.ok(
          released !== undefined && released.at <= Number(event.detail) + 500,
          `released within the grace: ${timeline(orchestrator.events)}`
        )
      }
    }
    const shown = await status()
    for (const pool of shown.pools) {
      assert.ok(pool.usageMs > 0 && pool.traffic.computes > 0, `${pool.name} shows its use`)
      // The model's buffers, held for a while: the memory term of the credit formula.
      assert.ok(pool.traffic.memoryGiBs > 0, `${pool.name} held memory: ${pool.traffic.memoryGiBs} GiB-s`)
    }
  })

  it('restarts a killed rpc-server, tells the lease holder, and shows it in status', async () => {
    await Promise.all(orchestrators.splice(0).map((o) => o.stop()))
    const node = await createMeshNode({
      privateKey: await ephemeralPrivateKey(),
      listen: ['/ip4/127.0.0.1/tcp/0']
    })
    try {
      await node.dial(multiaddr(agent.addresses[0] ?? ''))
      const peer = peerIdFromString(agent.peerId)
      const lease = await acquireLease({
        node,
        peer,
        pool: 'a',
        credential: await credentialFor(node, 'a'),
        logger: silentLogger()
      })
      const heard: string[] = []
      const restored = new Promise<void>((resolve) =>
        lease.onRpcServer((state) => {
          heard.push(state)
          if (state === 'restored') resolve()
        })
      )
      const before = await status()
      assert.ok(before.rpcServer.pid !== undefined)
      process.kill(before.rpcServer.pid, 'SIGKILL')
      await restored
      assert.deepEqual(heard, ['lost', 'restored'])
      const afterKill = await status()
      assert.equal(afterKill.rpcServer.state, 'up')
      assert.equal(afterKill.rpcServer.restarts, before.rpcServer.restarts + 1)
      assert.equal(afterKill.rpcServer.lastLoss, 'killed by SIGKILL')
      assert.equal(afterKill.rpcServer.port, before.rpcServer.port)
      const tunnel = await startRpcTunnel({ node, peer, logger: silentLogger() })
      try {
        const client = await connectRpc({ port: tunnel.port })
        assert.equal(client.version.major, 6)
        client.close()
      } finally {
        await tunnel.close()
      }
      await lease.release()
    } finally {
      await node.stop()
    }
  })

  it('leaves with notice: the holder is revoked, releases, and the agent and its rpc-server exit', async () => {
    const node = await createMeshNode({
      privateKey: await ephemeralPrivateKey(),
      listen: ['/ip4/127.0.0.1/tcp/0']
    })
    try {
      await node.dial(multiaddr(agent.addresses[0] ?? ''))
      const lease = await acquireLease({
        node,
        peer: peerIdFromString(agent.peerId),
        pool: 'b',
        credential: await credentialFor(node, 'b'),
        logger: silentLogger()
      })
      const rpcPid = (await status()).rpcServer.pid
      const exited = new Promise<number | null>((resolve) => agent.child.once('exit', resolve))
      await run(process.execPath, [AGENT, 'leave', '--identity', join(scratch.dir, 'agent.key')])
      // Bounded, with the agent's last words: a lost notice must fail here, not hang the run.
      const within = async <T>(what: string, promise: Promise<T>): Promise<T> => {
        let timer: NodeJS.Timeout | undefined
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${what} did not happen in 30 s:\n${agent.logs.slice(-15).join('\n')}`)),
            30_000
          )
        })
        try {
          return await Promise.race([promise, late])
        } finally {
          clearTimeout(timer)
        }
      }
      const revokeBy = await within('the revocation', lease.revoked)
      assert.ok(revokeBy > Date.now(), 'the holder got notice before the end')
      await within('the release', lease.release())
      assert.equal(await within('the agent exit', exited), 0)
      assert.ok(rpcPid !== undefined)
      assert.throws(() => process.kill(rpcPid, 0), 'rpc-server is gone too')
    } finally {
      await node.stop()
    }
  })
})

function timeline(events: readonly LeaseEvent[]): string {
  return events.map((e) => e.type).join(' ')
}
