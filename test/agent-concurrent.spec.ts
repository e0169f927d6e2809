import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import {
  TINY_MODEL,
  silentLogger,
  startLlamaServer,
  startRpcServer,
  type LlamaBinaries,
  type LlamaModelSpec
} from '@frankenstein-mesh/llama'
import {
  loopbackJoinArgs,
  loopbackServeArgs,
  spawnAgent,
  spawnOrchestrator,
  waitHealthy,
  type AgentProcess,
  type OrchestratorProcess
} from './fixtures/agent-process.ts'
import { PROMPTS, createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'

const run = promisify(execFile)
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
/** A second model, different in shape and weights, so that mixing the two up shows in the tokens. */
const OTHER_MODEL: LlamaModelSpec = { ...TINY_MODEL, name: 'tiny-other', layers: 4, seed: 7 }
const POOLS = ['a', 'b'] as const
const TOKENS = 16

interface Status {
  pools: Array<{ name: string; traffic: { connections: number; uploadBytes: number; computes: number } }>
  lease: { holders: Array<{ pool: string; id: number; quotaBytes?: number }> }
  sharing: {
    mode: string
    multiplexer?: {
      up: boolean
      sessions: number
      dropped: number
      pools: Array<{ pool: string; sessions: number; heldBytes: number; quotaBytes?: number }>
    }
  }
}

/** The tokens a model gives on a dedicated rpc-server, with the orchestrator's context and slots. */
async function dedicatedTokens(bins: LlamaBinaries, model: string): Promise<Map<string, number[]>> {
  const logger = silentLogger()
  const rpc = await startRpcServer({ binary: bins.rpcServer, logger })
  const server = await startLlamaServer({
    binary: bins.llamaServer,
    model,
    logger,
    rpc: [rpc.endpoint],
    contextSize: 1024,
    parallel: 1
  })
  try {
    const tokens = new Map<string, number[]>()
    for (const prompt of PROMPTS)
      tokens.set(prompt, [...(await greedyCompletion(server.url, prompt, TOKENS)).tokens])
    return tokens
  } finally {
    await server.stop()
    await rpc.stop()
  }
}

describe(
  'one agent shares its rpc-server with two pools at once (--sharing concurrent)',
  { timeout: 300_000 },
  () => {
    let bins: LlamaBinaries
    let scratch: Scratch
    let models: [string, string]
    let expected: [Map<string, number[]>, Map<string, number[]>]
    let agent: AgentProcess
    const orchestrators: OrchestratorProcess[] = []
    const status = async (): Promise<Status> => {
      const identity = join(scratch.dir, 'agent.key')
      const { stdout } = await run(process.execPath, [AGENT, 'status', '--identity', identity, '--json'])
      return JSON.parse(stdout) as Status
    }

    before(async () => {
      bins = await testBinaries()
      scratch = await createScratch('agent-concurrent')
      models = [await scratch.model(TINY_MODEL), await scratch.model(OTHER_MODEL)]
      expected = [await dedicatedTokens(bins, models[0]), await dedicatedTokens(bins, models[1])]
      agent = await spawnAgent([
        '--pool',
        'a',
        '--pool',
        'b',
        ...loopbackJoinArgs({ identity: join(scratch.dir, 'agent.key'), rpcServer: bins.rpcServer }),
        '--sharing',
        'concurrent',
        '--memory',
        '1GiB'
      ])
      for (const [i, pool] of POOLS.entries())
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
      await agent.stop()
      await scratch.remove()
    })

    it('serves both pools at the same time, each with the tokens of a dedicated rpc-server', async () => {
      await Promise.all(orchestrators.map((o) => waitHealthy(o.url, 120_000)))
      assert.notDeepEqual(expected[0], expected[1], 'the two models differ')
      for (const prompt of PROMPTS) {
        const both = await Promise.all(orchestrators.map((o) => greedyCompletion(o.url, prompt, TOKENS)))
        both.forEach((got, i) =>
          assert.deepEqual(got.tokens, expected[i]?.get(prompt), `pool ${POOLS[i]}: "${prompt}"`)
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
      assert.deepEqual(s.lease.holders.map((h) => h.pool).sort(), ['a', 'b'])
      assert.ok(
        s.lease.holders.every((h) => h.quotaBytes === 512 * 1024 ** 2),
        'each pool has half of 1 GiB'
      )
      const mux = s.sharing.multiplexer
      assert.ok(mux?.up === true, 'the multiplexer runs')
      assert.equal(mux.dropped, 0)
      for (const [i, pool] of POOLS.entries()) {
        const entry = mux.pools.find((p) => p.pool === pool)
        assert.ok(entry !== undefined && entry.sessions >= 1, `pool ${pool} has a live session`)
        assert.ok(entry.heldBytes > statSync(models[i] as string).size * 0.9, `pool ${pool} holds its model`)
      }
    })

    it('alternating requests cause no reload: no new weights are uploaded, the leases stay', async () => {
      const before = await status()
      for (let round = 0; round < 4; round++)
        for (const [i, orch] of orchestrators.entries()) {
          const prompt = PROMPTS[round % PROMPTS.length] as string
          assert.deepEqual(
            (await greedyCompletion(orch.url, prompt, TOKENS)).tokens,
            expected[i]?.get(prompt)
          )
        }
      const afterwards = await status()
      assert.deepEqual(
        afterwards.lease.holders.map((h) => h.id).sort(),
        before.lease.holders.map((h) => h.id).sort(),
        'the same leases'
      )
      for (const [i, pool] of POOLS.entries()) {
        const was = before.pools.find((p) => p.name === pool)?.traffic
        const now = afterwards.pools.find((p) => p.name === pool)?.traffic
        assert.ok(was !== undefined && now !== undefined)
        assert.ok(now.computes > was.computes, `pool ${pool} computed`)
        assert.equal(now.connections, was.connections, `pool ${pool}: no RPC connection ended (no restart)`)
        // Inputs travel as SET_TENSOR too, but a reload would send the whole model again.
        const model = statSync(models[i] as string).size
        assert.ok(
          now.uploadBytes - was.uploadBytes < model / 4,
          `pool ${pool} uploaded ${now.uploadBytes - was.uploadBytes} bytes (model: ${model})`
        )
      }
    })
  }
)
