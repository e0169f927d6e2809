/**
 * Failover time: a pool of two workers serves a streaming greedy completion; the worker in the
 * plan is killed (SIGKILL) mid-stream; we time from the kill to the first token the client gets
 * from the new plan, and split it with the orchestrator's own timestamps into detection (kill to
 * the plan declared dead), re-plan (to the deployment of the new plan: leases, tunnels) and
 * reload (model load on the new worker); the rest is replaying the prompt and the tokens already
 * sent. The killed worker is restarted before the next round.
 *
 * Usage: node bench/failover.ts [--rounds N] [--model tiny|large]
 */
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { LARGE_MODEL, TINY_MODEL, createLogger, ensureBinaries, ensureModel } from '@frankenstein-mesh/llama'
import { spawnAgent, spawnOrchestrator, type AgentProcess } from '../test/fixtures/agent-process.ts'
import { machine, median, saveResult, table } from './lib.ts'

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '3' }, model: { type: 'string', default: 'tiny' } }
})
const run = promisify(execFile)
const ORCH = join(import.meta.dirname, '..', 'apps', 'mesh-orch', 'src', 'bin.ts')
const logger = createLogger({ name: 'bench', level: 'warn' })
const bins = await ensureBinaries({ logger })
const spec = values.model === 'large' ? LARGE_MODEL : TINY_MODEL
const model = await ensureModel(spec, { logger })
const dir = await mkdtemp(join(tmpdir(), 'fm-failover-'))

interface Failover {
  reason: string
  invalidatedAt: number
  plannedAt?: number
  servingAt?: number
}

const startAgent = (name: string) =>
  spawnAgent(
    [
      '--pool',
      'bench',
      '--identity',
      join(dir, `${name}.key`),
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--rpc-server-bin',
      bins.rpcServer
    ],
    {
      env: { ...process.env, FM_LOG_LEVEL: 'warn' }
    }
  )
const agents = new Map<string, AgentProcess>([
  ['w1', await startAgent('w1')],
  ['w2', await startAgent('w2')]
])
const orch = await spawnOrchestrator(
  [
    '--pool',
    'bench',
    '--model',
    model,
    '--port',
    '0',
    '--identity',
    join(dir, 'orch.key'),
    '--listen',
    '/ip4/127.0.0.1/tcp/0',
    '--llama-server-bin',
    bins.llamaServer,
    '--worker-expiry',
    '3'
  ],
  { env: { ...process.env, FM_LOG_LEVEL: 'warn' } }
)
const status = async () =>
  JSON.parse(
    (await run(process.execPath, [ORCH, 'status', '--identity', join(dir, 'orch.key'), '--json'])).stdout
  ) as { state: string; plan: string[]; lastFailover: Failover | null }
const serving = async () => {
  const deadline = Date.now() + 600_000
  while ((await status()).state !== 'serving') {
    if (Date.now() > deadline) throw new Error('the pool does not serve')
    await new Promise((r) => setTimeout(r, 200))
  }
}

const rounds: Array<{
  totalMs: number
  detectionMs: number
  replanMs: number
  reloadMs: number
  replayMs: number
}> = []
try {
  for (let round = 0; round < Number(values.rounds); round++) {
    await serving()
    const plan = (await status()).plan.map((line) => line.split(':')[0])
    const [victimName, victim] = [...agents].find(([, a]) => plan.includes(a.peerId)) ?? []
    if (victim === undefined || victimName === undefined) throw new Error('no agent of ours serves')
    const res = await fetch(`${orch.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        prompt: 'The mesh of many machines',
        max_tokens: 400,
        temperature: 0,
        stream: true
      })
    })
    let events = 0
    let killedAt = 0
    let firstAfter = 0
    let pending = ''
    for await (const bytes of res.body ?? []) {
      pending += Buffer.from(bytes).toString('utf8')
      const count = pending.split('\n\n').length - 1
      pending = pending.slice(pending.lastIndexOf('\n\n') + 2)
      events += count
      if (killedAt === 0 && events >= 8) {
        killedAt = Date.now()
        await victim.stop('SIGKILL')
      } else if (killedAt !== 0 && firstAfter === 0 && count > 0 && Date.now() - killedAt > 20) {
        firstAfter = Date.now()
      }
    }
    const failover = (await status()).lastFailover
    if (failover?.servingAt === undefined || failover.plannedAt === undefined || firstAfter === 0)
      throw new Error(`round ${round + 1}: no failover seen`)
    const result = {
      totalMs: firstAfter - killedAt,
      detectionMs: failover.invalidatedAt - killedAt,
      replanMs: failover.plannedAt - failover.invalidatedAt,
      reloadMs: failover.servingAt - failover.plannedAt,
      replayMs: firstAfter - failover.servingAt
    }
    rounds.push(result)
    process.stderr.write(`round ${round + 1}: ${JSON.stringify(result)}\n`)
    agents.set(victimName, await startAgent(victimName))
  }
} finally {
  await orch.stop()
  await Promise.all([...agents.values()].map((a) => a.stop()))
  await rm(dir, { recursive: true, force: true })
}

const path = await saveResult('failover', {
  bench: 'failover',
  model: spec.name,
  date: new Date().toISOString(),
  machine: machine(),
  rounds
})
const m = (key: keyof (typeof rounds)[number]): string => median(rounds.map((r) => r[key])).toFixed(0)
console.log(
  table(
    ['model', 'kill to first token ms', 'detection ms', 're-plan ms', 'reload ms', 'replay ms'],
    [[spec.name, m('totalMs'), m('detectionMs'), m('replanMs'), m('reloadMs'), m('replayMs')]]
  )
)
console.log(`\nmedians of ${rounds.length} rounds; raw figures in ${path}`)
