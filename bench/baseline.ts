/**
 * Baseline: tokens/s and model load time of llama-server alone ("local") against llama-server
 * with the model split over two ggml-rpc-servers on loopback ("direct RPC"), for the tiny and the
 * ~1.5 GB generated model. Both paths are measured alternately in one run, so the ratios hold even
 * on a shared, noisy machine. Usage: node bench/baseline.ts [--rounds N] [--skip-large]
 */
import { parseArgs } from 'node:util'
import {
  LARGE_MODEL,
  TINY_MODEL,
  createLogger,
  ensureBinaries,
  ensureModel,
  startLlamaServer,
  startRpcServer,
  type LlamaBinaries,
  type LlamaModelSpec,
  type RpcServer
} from '@frankenstein-mesh/llama'
import { generate, machine, median, saveResult, table } from './lib.ts'

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '3' }, 'skip-large': { type: 'boolean', default: false } }
})
const rounds = Number(values.rounds)
const logger = createLogger({ name: 'bench', level: 'warn' })
const PROMPT = 'The mesh of many machines'

interface PathResult {
  loadSeconds: number[]
  tokensPerSecond: number[]
}

/** Starts llama-server for one path, timing spawn to /health 200; returns its URL and a stop. */
async function startPath(bins: LlamaBinaries, model: string, rpc: readonly RpcServer[]) {
  const t0 = performance.now()
  const server = await startLlamaServer({
    binary: bins.llamaServer,
    model,
    logger,
    rpc: rpc.map((r) => r.endpoint),
    tensorSplit: rpc.length > 0 ? rpc.map(() => 1) : undefined,
    readyTimeoutMs: 600_000
  })
  return { server, loadSeconds: (performance.now() - t0) / 1000 }
}

async function measure(bins: LlamaBinaries, spec: LlamaModelSpec, tokens: number) {
  const model = await ensureModel(spec, { logger })
  const results: Record<'local' | 'rpc', PathResult> = {
    local: { loadSeconds: [], tokensPerSecond: [] },
    rpc: { loadSeconds: [], tokensPerSecond: [] }
  }
  let reference: readonly number[] | undefined
  let identical = true
  for (let round = 0; round < rounds; round++) {
    for (const path of ['local', 'rpc'] as const) {
      // Fresh rpc-servers every round: a reused one would hold nothing, but starts cost nothing either.
      const rpc =
        path === 'rpc'
          ? await Promise.all([0, 1].map(() => startRpcServer({ binary: bins.rpcServer, logger })))
          : []
      const { server, loadSeconds } = await startPath(bins, model, rpc)
      try {
        await generate(server.url, PROMPT, 4) // warm-up: first graph allocations
        const run = await generate(server.url, PROMPT, tokens)
        reference ??= run.tokens
        identical &&= run.tokens.join() === reference.join()
        results[path].loadSeconds.push(loadSeconds)
        results[path].tokensPerSecond.push(run.tokensPerSecond)
        console.error(
          `${spec.name} round ${round + 1} ${path}: load ${loadSeconds.toFixed(2)} s, ${run.tokensPerSecond.toFixed(1)} tok/s`
        )
      } finally {
        await server.stop()
        await Promise.all(rpc.map((r) => r.stop()))
      }
    }
  }
  const summary = (r: PathResult) => ({
    ...r,
    medianLoadSeconds: median(r.loadSeconds),
    medianTokensPerSecond: median(r.tokensPerSecond)
  })
  const local = summary(results.local)
  const rpc = summary(results.rpc)
  return {
    model: spec.name,
    tokens,
    identicalTokens: identical,
    local,
    rpc,
    ratios: {
      tokensPerSecond: rpc.medianTokensPerSecond / local.medianTokensPerSecond,
      loadTime: rpc.medianLoadSeconds / local.medianLoadSeconds
    }
  }
}

const bins = await ensureBinaries({ logger })
const specs: Array<[LlamaModelSpec, number]> = [[TINY_MODEL, 64]]
if (!values['skip-large']) specs.push([LARGE_MODEL, 16])
const models = []
for (const [spec, tokens] of specs) models.push(await measure(bins, spec, tokens))

const path = await saveResult('baseline', {
  bench: 'baseline',
  date: new Date().toISOString(),
  machine: machine(),
  llama: bins.build,
  rounds,
  models
})
const f = (n: number, digits = 2) => n.toFixed(digits)
console.log(
  table(
    [
      'model',
      'local tok/s',
      'direct RPC tok/s',
      'ratio',
      'local load s',
      'RPC load s',
      'ratio',
      'same tokens'
    ],
    models.map((m) => [
      m.model,
      f(m.local.medianTokensPerSecond, 1),
      f(m.rpc.medianTokensPerSecond, 1),
      f(m.ratios.tokensPerSecond),
      f(m.local.medianLoadSeconds),
      f(m.rpc.medianLoadSeconds),
      f(m.ratios.loadTime),
      m.identicalTokens ? 'yes' : 'NO'
    ])
  )
)
console.log(`\nmedians of ${rounds} alternating rounds; raw figures in ${path}`)
