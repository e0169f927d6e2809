import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import OpenAI from 'openai'
import { TINY_MODEL, silentLogger, startLlamaServer, type LlamaBinaries } from '@frankenstein-mesh/llama'
import {
  spawnAgent,
  spawnOrchestrator,
  waitHealthy,
  type AgentProcess,
  type OrchestratorProcess,
  loopbackJoinArgs
} from './fixtures/agent-process.ts'
import { PROMPTS, createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'

const run = promisify(execFile)
const ORCH = join(import.meta.dirname, '..', 'apps', 'mesh-orch', 'src', 'bin.ts')
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')

interface Fixture {
  bins: LlamaBinaries
  scratch: Scratch
  model: string
  expected: Map<string, number[]>
  processes: Array<AgentProcess | OrchestratorProcess>
}

async function fixture(name: string): Promise<Fixture> {
  const bins = await testBinaries()
  const scratch = await createScratch(name)
  const model = await scratch.model(TINY_MODEL)
  const expected = new Map<string, number[]>()
  const local = await startLlamaServer({ binary: bins.llamaServer, model, logger: silentLogger() })
  try {
    for (const prompt of PROMPTS)
      expected.set(prompt, [...(await greedyCompletion(local.url, prompt, 12)).tokens])
  } finally {
    await local.stop()
  }
  return { bins, scratch, model, expected, processes: [] }
}

const agentIn = async (f: Fixture, name: string, args: string[]) => {
  const agent = await spawnAgent([
    ...loopbackJoinArgs({ identity: join(f.scratch.dir, `${name}.key`), rpcServer: f.bins.rpcServer }),
    ...args
  ])
  f.processes.push(agent)
  return agent
}
const orchIn = async (f: Fixture, name: string, args: string[]) => {
  const orch = await spawnOrchestrator([
    '--identity',
    join(f.scratch.dir, `${name}.key`),
    '--listen',
    '/ip4/127.0.0.1/tcp/0',
    '--port',
    '0',
    '--llama-server-bin',
    f.bins.llamaServer,
    '--model',
    f.model,
    '--ctx-size',
    '2048',
    '--parallel',
    '2',
    ...args
  ])
  f.processes.push(orch)
  return orch
}
const cleanup = async (f: Fixture) => {
  await Promise.all(f.processes.map((p) => p.stop()))
  await f.scratch.remove()
}

describe('mesh-orch serve: a pool through the real CLIs', { timeout: 240_000 }, () => {
  let f: Fixture
  let orch: OrchestratorProcess

  before(async () => {
    f = await fixture('orch')
    // 64 MiB each: neither can hold the model and its KV cache alone, so the plan takes both.
    await Promise.all(['w1', 'w2'].map((n) => agentIn(f, n, ['--pool', 'serve', '--memory', '64MiB'])))
    orch = await orchIn(f, 'orch', ['--pool', 'serve'])
    await waitHealthy(orch.url)
  })
  after(async () => {
    await cleanup(f)
  })

  it('serves greedy completions through two workers found over the mesh, as a local llama-server would', async () => {
    for (const prompt of PROMPTS) {
      const completion = await greedyCompletion(orch.url, prompt, 12)
      assert.deepEqual(completion.tokens, f.expected.get(prompt), prompt)
    }
    const { stdout } = await run(process.execPath, [
      ORCH,
      'status',
      '--identity',
      join(f.scratch.dir, 'orch.key'),
      '--json'
    ])
    const status = JSON.parse(stdout) as { state: string; plan: string[]; workers: unknown[] }
    assert.equal(status.state, 'serving')
    assert.equal(status.plan.length, 2, `plan: ${status.plan.join('; ')}`)
    assert.equal(status.workers.length, 2)
  })

  it('exports Prometheus metrics: the orchestrator on its HTTP port, each agent on its control socket', async () => {
    const res = await fetch(`${orch.url}/metrics`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/)
    const text = await res.text()
    assert.match(text, /^fm_orch_state\{state="serving"\} 1$/m)
    assert.match(text, /^fm_orch_plan_workers 2$/m)
    const loaded = [...text.matchAll(/^fm_orch_tunnel_loaded_bytes\{peer="[^"]+"\} (\d+)$/gm)].map((m) =>
      Number(m[1])
    )
    assert.equal(loaded.length, 2)
    assert.ok(
      loaded.every((bytes) => bytes > 0),
      `loaded: ${loaded.join(', ')}`
    )

    const { stdout } = await run(process.execPath, [
      AGENT,
      'metrics',
      '--identity',
      join(f.scratch.dir, 'w1.key')
    ])
    assert.match(stdout, /^fm_agent_rpc_server_up 1$/m)
    assert.match(stdout, /^fm_agent_lease_held\{pool="serve"\} 1$/m)
    assert.match(stdout, /^fm_agent_upload_bytes\{pool="serve"\} [1-9]\d*$/m)
  })

  it('answers the official openai client, streaming and not', async () => {
    const client = new OpenAI({ baseURL: `${orch.url}/v1`, apiKey: 'not-needed', maxRetries: 0 })
    const completion = await client.completions.create({
      model: 'pool',
      prompt: 'Hello world',
      max_tokens: 8,
      temperature: 0
    })
    assert.equal(completion.choices.length, 1)
    assert.ok((completion.choices[0]?.text ?? '').length > 0)
    const chat = await client.chat.completions.create({
      model: 'pool',
      messages: [{ role: 'user', content: 'Hello' }],
      max_completion_tokens: 8,
      temperature: 0
    })
    assert.ok(chat.choices[0]?.message.content !== undefined)
    const stream = await client.chat.completions.create({
      model: 'pool',
      messages: [{ role: 'user', content: 'Hello' }],
      max_completion_tokens: 8,
      temperature: 0,
      stream: true
    })
    let text = ''
    let finish: string | null | undefined
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? ''
      finish = chunk.choices[0]?.finish_reason ?? finish
    }
    assert.equal(text, chat.choices[0].message.content)
    assert.equal(finish, 'length')
    const models = await client.models.list()
    assert.ok(models.data.length >= 1)
  })
})

describe('mesh-orch serve: waiting and revocation', { timeout: 240_000 }, () => {
  let f: Fixture

  before(async () => {
    f = await fixture('orch-revoke')
  })
  after(async () => {
    await cleanup(f)
  })

  it('answers 503 with Retry-After when no plan serves within the queue timeout', async () => {
    const lonely = await orchIn(f, 'lonely', ['--pool', 'nobody-here', '--queue-timeout', '1', '--no-mdns'])
    const res = await fetch(`${lonely.url}/v1/completions`, {
      method: 'POST',
      body: JSON.stringify({ prompt: 'x', max_tokens: 1 })
    })
    assert.equal(res.status, 503)
    assert.equal(res.headers.get('retry-after'), '1')
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /no plan is serving/)
  })

  it('switches to a plan with fewer workers when a big one joins, and swaps the model on request', async () => {
    await Promise.all(['small1', 'small2'].map((n) => agentIn(f, n, ['--pool', 'grow', '--memory', '64MiB'])))
    const g = await orchIn(f, 'grow', ['--pool', 'grow', '--better-plan-after', '0'])
    await waitHealthy(g.url)
    const planOf = async () => {
      const { stdout } = await run(process.execPath, [
        ORCH,
        'status',
        '--identity',
        join(f.scratch.dir, 'grow.key'),
        '--json'
      ])
      return JSON.parse(stdout) as { plan: string[]; state: string; model: string }
    }
    assert.equal((await planOf()).plan.length, 2)
    const big = await agentIn(f, 'big', ['--pool', 'grow'])
    const deadline = Date.now() + 60_000
    while (
      !(await planOf()).plan.every((line) => line.startsWith(big.peerId)) ||
      (await planOf()).state !== 'serving'
    ) {
      assert.ok(Date.now() < deadline, 'the plan moved to the big worker')
      await new Promise((r) => setTimeout(r, 250))
    }
    assert.deepEqual(
      (await greedyCompletion(g.url, PROMPTS[0] as string, 12)).tokens,
      f.expected.get(PROMPTS[0] as string)
    )

    const other = await f.scratch.model({ ...TINY_MODEL, name: 'other', seed: 7 })
    await run(process.execPath, [ORCH, 'model', other, '--identity', join(f.scratch.dir, 'grow.key')])
    while ((await planOf()).model !== other || (await planOf()).state !== 'serving')
      await new Promise((r) => setTimeout(r, 250))
    const local = await startLlamaServer({ binary: f.bins.llamaServer, model: other, logger: silentLogger() })
    try {
      const expected = await greedyCompletion(local.url, 'swap', 12)
      assert.deepEqual((await greedyCompletion(g.url, 'swap', 12)).tokens, expected.tokens)
    } finally {
      await local.stop()
    }
  })

  it('moves to another worker when its lease is revoked, and no request fails', async () => {
    const shared = await agentIn(f, 'shared', [
      '--pool',
      'r',
      '--pool',
      's',
      '--min-slice',
      '2',
      '--grace',
      '10'
    ])
    const r = await orchIn(f, 'r', ['--pool', 'r'])
    await waitHealthy(r.url)
    const spare = await agentIn(f, 'spare', ['--pool', 'r'])
    const failures: string[] = []
    let served = 0
    const traffic = (async () => {
      const deadline = Date.now() + 20_000
      while (Date.now() < deadline) {
        const prompt = PROMPTS[served % PROMPTS.length] as string
        try {
          const completion = await greedyCompletion(r.url, prompt, 12)
          if (completion.tokens.join() !== f.expected.get(prompt)?.join())
            failures.push(`wrong tokens for ${prompt}`)
          served++
        } catch (err) {
          failures.push((err as Error).message)
        }
      }
    })()
    await new Promise((resolve) => setTimeout(resolve, 3_000))
    const s = await orchIn(f, 's', ['--pool', 's'])
    await traffic
    assert.deepEqual(failures, [])
    assert.ok(served > 10, `served ${served}`)
    await waitHealthy(s.url, 30_000)
    const { stdout } = await run(process.execPath, [
      ORCH,
      'status',
      '--identity',
      join(f.scratch.dir, 'r.key'),
      '--json'
    ])
    const status = JSON.parse(stdout) as { plan: string[] }
    assert.ok(
      status.plan.some((line) => line.startsWith(spare.peerId)),
      `r moved to the spare worker: ${status.plan.join('; ')}`
    )
    assert.ok(!status.plan.some((line) => line.startsWith(shared.peerId)))
  })
})
