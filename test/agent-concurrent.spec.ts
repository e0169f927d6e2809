import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { TINY_MODEL, type LlamaBinaries } from '@frankenstein-mesh/llama'
import {
  loopbackJoinArgs,
  loopbackServeArgs,
  spawnAgent,
  spawnOrchestrator,
  waitHealthy,
  type AgentProcess,
  type OrchestratorProcess
} from './fixtures/agent-process.ts'
import { childNamed } from './fixtures/proc-figures.ts'
import {
  OTHER_MODEL,
  PROMPTS,
  createScratch,
  greedyCompletion,
  onDedicatedRpcServer,
  testBinaries,
  type Scratch
} from './fixtures/llama.ts'

const run = promisify(execFile)
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
/** A second model, different in shape and weights, so that mixing the two up shows in the tokens. */
const TOKENS = 16

interface Status {
  pools: Array<{ name: string; traffic: { connections: number; uploadBytes: number; computes: number } }>
  lease: { holders: Array<{ pool: string; id: number; quotaBytes?: number }> }
  rpcServer: { pid?: number; restarts: number }
  credits: { recorded: number; disputes: number; balances: Array<{ pool: string; receipts: number }> }
  sharing: {
    setting: string
    mode: string
    multiplexer?: {
      up: boolean
      sessions: number
      dropped: number
      pools: Array<{ pool: string; sessions: number; heldBytes: number; quotaBytes?: number }>
    }
  }
}

/** Each model's tokens on a dedicated rpc-server, computed once for every suite here. */
let dedicated: Promise<[Map<string, number[]>, Map<string, number[]>]> | undefined

/** The tokens a model gives on a dedicated rpc-server, with the orchestrator's context and slots. */
function dedicatedTokens(bins: LlamaBinaries, model: string): Promise<Map<string, number[]>> {
  return onDedicatedRpcServer(
    bins,
    model,
    async (url) => {
      const tokens = new Map<string, number[]>()
      for (const prompt of PROMPTS)
        tokens.set(prompt, [...(await greedyCompletion(url, prompt, TOKENS)).tokens])
      return tokens
    },
    { contextSize: 1024, parallel: 1 }
  )
}

interface Suite {
  readonly name: string
  /** Pool names: unique per suite, since orchestrators find agents by mDNS on this host. */
  readonly pools: readonly [string, string]
  readonly join: readonly string[]
  /** Also kill rpc-server and check both pools come back. */
  readonly restart?: boolean
}

/** A short scratch folder name: control sockets live there, and their paths are bounded. */
const scratchName = (suite: Suite): string => `agent-${suite.pools[0]}`

/** One agent, one rpc-server, two real orchestrators of two pools with two different models. */
function sharedWorker(suite: Suite): {
  status: () => Promise<Status>
  orchestrators: OrchestratorProcess[]
  models: () => [string, string]
  expected: () => [Map<string, number[]>, Map<string, number[]>]
} {
  let scratch: Scratch
  let models: [string, string]
  let expected: [Map<string, number[]>, Map<string, number[]>]
  let agent: AgentProcess | undefined
  const orchestrators: OrchestratorProcess[] = []
  before(async () => {
    const bins: LlamaBinaries = await testBinaries()
    scratch = await createScratch(scratchName(suite))
    models = [await scratch.model(TINY_MODEL), await scratch.model(OTHER_MODEL)]
    const [first, second] = models
    dedicated ??= (async () => [await dedicatedTokens(bins, first), await dedicatedTokens(bins, second)])()
    expected = await dedicated
    agent = await spawnAgent([
      '--pool',
      suite.pools[0],
      '--pool',
      suite.pools[1],
      ...loopbackJoinArgs({ identity: join(scratch.dir, 'agent.key'), rpcServer: bins.rpcServer }),
      ...suite.join
    ])
    for (const [i, pool] of suite.pools.entries())
      orchestrators.push(
        await spawnOrchestrator(
          loopbackServeArgs({
            pool,
            identity: join(scratch.dir, `orch-${pool}.key`),
            llamaServer: bins.llamaServer,
            model: models[i] as string
          })
        )
      )
  })
  after(async () => {
    await Promise.all(orchestrators.map((o) => o.stop()))
    await agent?.stop()
    await scratch.remove()
  })
  return {
    status: async () => {
      const identity = join(scratch.dir, 'agent.key')
      const { stdout } = await run(process.execPath, [AGENT, 'status', '--identity', identity, '--json'])
      return JSON.parse(stdout) as Status
    },
    orchestrators,
    models: () => models,
    expected: () => expected
  }
}

function concurrentSuite(suite: Suite, quotaOk: (quota: number | undefined, model: number) => boolean): void {
  describe(suite.name, { timeout: 300_000 }, () => {
    const { status, orchestrators, models, expected } = sharedWorker(suite)
    const [a, b] = suite.pools

    it('serves both pools at the same time, each with the tokens of a dedicated rpc-server', async () => {
      await Promise.all(orchestrators.map((o) => waitHealthy(o.url, 120_000)))
      assert.notDeepEqual(expected()[0], expected()[1], 'the two models differ')
      for (const prompt of PROMPTS) {
        const both = await Promise.all(orchestrators.map((o) => greedyCompletion(o.url, prompt, TOKENS)))
        both.forEach((got, i) =>
          assert.deepEqual(got.tokens, expected()[i]?.get(prompt), `pool ${suite.pools[i]}: "${prompt}"`)
        )
      }
      for (const orch of orchestrators)
        assert.ok(
          orch.logs.some(
            (line) => line.includes('"lease granted"') && line.includes('"sharing":"concurrent"')
          ),
          'the orchestrator was told its lease is concurrent'
        )
    })

    it('shows concurrent mode, both leases and one loaded session per pool in status', async () => {
      const s = await status()
      assert.equal(s.sharing.mode, 'concurrent')
      assert.deepEqual(s.lease.holders.map((h) => h.pool).sort(), [a, b])
      const mux = s.sharing.multiplexer
      assert.ok(mux?.up === true, 'the multiplexer runs')
      assert.equal(mux.dropped, 0)
      for (const [i, pool] of suite.pools.entries()) {
        const size = statSync(models()[i] as string).size
        const holder = s.lease.holders.find((h) => h.pool === pool)
        assert.ok(quotaOk(holder?.quotaBytes, size), `pool ${pool}'s quota: ${holder?.quotaBytes}`)
        const entry = mux.pools.find((p) => p.pool === pool)
        assert.ok(entry !== undefined && entry.sessions >= 1, `pool ${pool} has a live session`)
        assert.ok(entry.heldBytes > size * 0.9, `pool ${pool} holds its model`)
      }
    })

    it('alternating requests cause no reload: no new weights are uploaded, the leases stay', async () => {
      const before = await status()
      for (let round = 0; round < 4; round++)
        for (const [i, orch] of orchestrators.entries()) {
          const prompt = PROMPTS[round % PROMPTS.length] as string
          assert.deepEqual(
            (await greedyCompletion(orch.url, prompt, TOKENS)).tokens,
            expected()[i]?.get(prompt)
          )
        }
      const afterwards = await status()
      assert.deepEqual(
        afterwards.lease.holders.map((h) => h.id).sort(),
        before.lease.holders.map((h) => h.id).sort(),
        'the same leases'
      )
      for (const [i, pool] of suite.pools.entries()) {
        const was = before.pools.find((p) => p.name === pool)?.traffic
        const now = afterwards.pools.find((p) => p.name === pool)?.traffic
        assert.ok(was !== undefined && now !== undefined)
        assert.ok(now.computes > was.computes, `pool ${pool} computed`)
        assert.equal(now.connections, was.connections, `pool ${pool}: no RPC connection ended (no restart)`)
        // Inputs travel as SET_TENSOR too, but a reload would send the whole model again.
        const model = statSync(models()[i] as string).size
        assert.ok(
          now.uploadBytes - was.uploadBytes < model / 4,
          `pool ${pool} uploaded ${now.uploadBytes - was.uploadBytes} bytes (model: ${model})`
        )
      }
    })

    it('keeps metering each pool: both leases earn countersigned receipts', async () => {
      const deadline = Date.now() + 30_000
      const earning = (s: Status): string[] =>
        s.credits.balances.filter((x) => x.receipts > 0).map((x) => x.pool)
      let s = await status()
      while (earning(s).length < 2 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250))
        s = await status()
      }
      assert.deepEqual(earning(s).sort(), [a, b], JSON.stringify(s.credits))
      assert.equal(s.credits.disputes, 0, 'every orchestrator agreed with the figures of its receipts')
    })

    if (suite.restart === true)
      it("a pool's llama-server SIGKILLed mid-generation: the other pool goes on correctly, the killed sessions end", async () => {
        const [orchA, orchB] = orchestrators
        assert.ok(orchA?.child.pid !== undefined && orchB !== undefined)
        const llama = childNamed(orchA.child.pid, 'llama-server')
        assert.ok(llama !== undefined, "pool a's orchestrator runs a llama-server")
        const before = await status()
        const generating = (async () => {
          const got: Array<[string, number[]]> = []
          for (const prompt of PROMPTS)
            got.push([prompt, [...(await greedyCompletion(orchB.url, prompt, TOKENS)).tokens]])
          return got
        })()
        process.kill(llama, 'SIGKILL') // while pool b's first request is in flight
        for (const [prompt, tokens] of await generating)
          assert.deepEqual(tokens, expected()[1].get(prompt), `pool ${b}: "${prompt}"`)
        // Pool a's orchestrator starts llama-server again, and it loads through a new session.
        const prompt = PROMPTS[0] as string
        assert.deepEqual(await completeWithin(orchA.url, prompt, 90_000), expected()[0].get(prompt))
        const afterwards = await status()
        assert.equal(afterwards.rpcServer.restarts, before.rpcServer.restarts, 'rpc-server kept running')
        assert.equal(afterwards.sharing.multiplexer?.dropped, 0, 'no session was dropped as hostile')
        const connections = (s: Status): number | undefined =>
          s.pools.find((p) => p.name === b)?.traffic.connections
        assert.equal(connections(afterwards), connections(before), `pool ${b}'s RPC connections never ended`)
        // Had the killed sessions lived on in the multiplexer, pool a would hold its model twice.
        const size = statSync(models()[0]).size
        const held = afterwards.sharing.multiplexer.pools.find((p) => p.pool === a)?.heldBytes ?? 0
        assert.ok(held > size * 0.9 && held < size * 1.5, `pool ${a} holds ${held} bytes (model: ${size})`)
      })

    if (suite.restart === true)
      it('starts a new multiplexer when rpc-server is restarted, and both pools serve again', async () => {
        const pid = (await status()).rpcServer.pid
        assert.ok(pid !== undefined)
        process.kill(pid, 'SIGKILL')
        const deadline = Date.now() + 60_000
        let s = await status()
        while (!(s.rpcServer.restarts === 1 && s.sharing.multiplexer?.up === true) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 250))
          s = await status()
        }
        assert.equal(s.rpcServer.restarts, 1)
        assert.equal(s.sharing.multiplexer?.up, true)
        for (const [i, orch] of orchestrators.entries()) {
          const prompt = PROMPTS[i] as string
          assert.deepEqual(await completeWithin(orch.url, prompt, 90_000), expected()[i]?.get(prompt))
        }
        const pools = (await status()).sharing.multiplexer?.pools ?? []
        assert.deepEqual(
          pools
            .filter((p) => p.sessions > 0)
            .map((p) => p.pool)
            .sort(),
          [a, b]
        )
      })
  })
}

concurrentSuite(
  {
    name: 'one agent shares its rpc-server with two pools at once (--sharing concurrent)',
    pools: ['cc-a', 'cc-b'],
    join: ['--sharing', 'concurrent', '--memory', '1GiB', '--receipt-interval', '1'],
    restart: true
  },
  (quota) => quota === 512 * 1024 ** 2
)

concurrentSuite(
  {
    name: '--sharing auto with room for both models: concurrent',
    pools: ['au-a', 'au-b'],
    join: ['--sharing', 'auto', '--memory', '1GiB', '--receipt-interval', '1']
  },
  // The orchestrator's plan (weights and KV cache) plus headroom: more than the model, far below 1 GiB.
  (quota, model) => quota !== undefined && quota > model && quota < 512 * 1024 ** 2
)

/** A completion from an orchestrator that may be between slices: retried until `timeoutMs`. */
async function completeWithin(url: string, prompt: string, timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return [...(await greedyCompletion(url, prompt, TOKENS)).tokens]
    } catch (err) {
      if (Date.now() > deadline) throw err
      await new Promise((r) => setTimeout(r, 500))
    }
  }
}

describe('--sharing auto without room for both models: exclusive time slices', { timeout: 300_000 }, () => {
  // The tiny models' plans take ~22 and ~16 MiB, each given 64 MiB of headroom: one fits in
  // 150 MiB, both do not.
  const suite: Suite = {
    name: 'auto, exclusive',
    pools: ['ax-a', 'ax-b'],
    join: ['--sharing', 'auto', '--memory', '150MiB', '--min-slice', '3', '--grace', '3', '--lease-ttl', '5']
  }
  const { status, orchestrators, expected } = sharedWorker(suite)

  it('falls back to exclusive leases, tells the orchestrators, and both pools get served in turn', async () => {
    const deadline = Date.now() + 90_000
    let s = await status()
    while (!(s.sharing.mode === 'exclusive' && s.lease.holders.length === 1) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250))
      s = await status()
    }
    assert.equal(s.sharing.setting, 'auto')
    assert.equal(s.sharing.mode, 'exclusive', 'the pools do not fit together')
    assert.equal(s.lease.holders.length, 1, 'one pool at a time')
    for (const [i, orch] of orchestrators.entries()) {
      const prompt = PROMPTS[i] as string
      assert.deepEqual(await completeWithin(orch.url, prompt, 90_000), expected()[i]?.get(prompt))
    }
    const exclusive = orchestrators.filter((o) =>
      o.logs.some((line) => line.includes('"lease granted"') && line.includes('"sharing":"exclusive"'))
    )
    assert.ok(exclusive.length >= 1, 'an orchestrator was told its lease is exclusive')
    const concurrentNow = (await status()).lease.holders
    assert.ok(concurrentNow.length <= 1, `never two holders: ${JSON.stringify(concurrentNow)}`)
  })
})
