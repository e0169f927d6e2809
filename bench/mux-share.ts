/**
 * Compute sharing through the RPC multiplexer: two pools (weights 2:1 by default), each a real
 * llama-server with its own model, generate continuously through the multiplexer to one real
 * rpc-server. Phases, in one run: each pool alone, both at once with the fair-share hold, both
 * at once work-conserving (holdMs 0). For each: every pool's share of rpc-server compute time
 * (measured by the multiplexer) and its tokens/s. Then a third pool loads a bigger model (its
 * weights cross the multiplexer in 1 MiB SET_TENSOR pieces) while pool a streams tokens: a's
 * longest gap between two tokens then, against its longest gap with nothing else going on.
 *
 * Usage: node bench/mux-share.ts [--duration S] [--weights 2:1] [--hold-ms MS] [--tokens N]
 */
import { parseArgs } from 'node:util'
import {
  TINY_MODEL,
  createLogger,
  ensureBinaries,
  ensureModel,
  startLlamaServer,
  startRpcServer,
  type LlamaModelSpec,
  type LlamaServer
} from '@frankenstein-mesh/llama'
import {
  fairShare,
  listenRpcMux,
  startRpcMux,
  type MuxListener,
  type MuxScheduler,
  type MuxSessionView,
  type RpcMux
} from '@frankenstein-mesh/tunnel'
import { generate, machine, saveResult, table } from './lib.ts'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '15' },
    weights: { type: 'string', default: '2:1' },
    'hold-ms': { type: 'string', default: '4' },
    tokens: { type: 'string', default: '16' }
  }
})
const durationMs = Math.min(600, Math.max(1, Number(values.duration))) * 1000
const [wa, wb] = values.weights.split(':').map(Number) as [number, number]
const holdMs = Number(values['hold-ms'])
const perRequest = Number(values.tokens)
const logger = createLogger({ name: 'bench', level: 'warn' })
const say = (text: string): void => void process.stderr.write(`${text}\n`)

/** Bigger than the tests' tiny model, so that rpc-server's compute, not the round trips, is the bottleneck. */
const SHAPE = { ...TINY_MODEL, layers: 8, embedding: 512, feedForward: 1536 }
const MODELS: Record<'a' | 'b', LlamaModelSpec> = {
  a: { ...SHAPE, name: 'share-a', seed: 3 },
  b: { ...SHAPE, name: 'share-b', seed: 5 }
}
/** ~200 MB F16: the upload that must not stall pool a. */
const UPLOAD: LlamaModelSpec = {
  ...TINY_MODEL,
  name: 'share-upload',
  layers: 8,
  embedding: 1024,
  feedForward: 2816,
  heads: 16,
  kvHeads: 8,
  weightType: 'f16',
  seed: 9
}
type Pool = keyof typeof MODELS
const WEIGHTS: Record<Pool, number> = { a: wa, b: wb }

/** Fair share with the hold or without, switched between phases on one multiplexer. */
function switchable(): { scheduler: MuxScheduler; hold: (on: boolean) => void } {
  const weight = (pool: string): number | undefined => WEIGHTS[pool as Pool]
  const holding = fairShare({ weight, holdMs })
  const conserving = fairShare({ weight, holdMs: 0 })
  let current = holding
  const scheduler: MuxScheduler = {
    pick: <S extends MuxSessionView>(ready: readonly S[], inFlight: readonly S[]) =>
      current.pick(ready, inFlight),
    charge: (pool, ms) => {
      holding.charge?.(pool, ms)
      conserving.charge?.(pool, ms)
    },
    get holdMs() {
      return current.holdMs ?? 0
    }
  }
  return { scheduler, hold: (on) => void (current = on ? holding : conserving) }
}

interface PoolResult {
  readonly computeMs: number
  readonly tokens: number
  readonly tokensPerSecond: number
}

/** Generates on each given pool until the window closes; compute time is read over the window. */
async function phase(mux: RpcMux, servers: Record<Pool, LlamaServer>, pools: readonly Pool[]) {
  const before = mux.stats().computeMs
  const start = performance.now()
  const end = start + durationMs
  const loops = pools.map(async (pool) => {
    let tokens = 0
    let last = start
    for (let i = 0; performance.now() < end && i < 100_000; i++) {
      const got = await generate(servers[pool].url, `Pool ${pool} request ${i}`, perRequest)
      if (performance.now() <= end) [tokens, last] = [tokens + got.tokens.length, performance.now()]
    }
    return { pool, tokens, seconds: (last - start) / 1000 }
  })
  await new Promise((resolve) => setTimeout(resolve, durationMs))
  const after = mux.stats().computeMs
  const results = new Map<Pool, PoolResult>()
  for (const { pool, tokens, seconds } of await Promise.all(loops)) {
    const computeMs = (after[pool] ?? 0) - (before[pool] ?? 0)
    results.set(pool, { computeMs, tokens, tokensPerSecond: seconds > 0 ? tokens / seconds : 0 })
  }
  return results
}

/** Streams `n` tokens and returns the gaps (ms) between consecutive tokens' arrival. */
async function streamGaps(url: string, prompt: string, n: number): Promise<number[]> {
  const res = await fetch(`${url}/completion`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, n_predict: n, temperature: 0, ignore_eos: true, stream: true }),
    signal: AbortSignal.timeout(120_000)
  })
  if (!res.ok || res.body === null) throw new Error(`HTTP ${res.status}`)
  const times: number[] = []
  const decoder = new TextDecoder()
  for await (const chunk of res.body) {
    const events = decoder.decode(chunk as Uint8Array, { stream: true }).split('data: ').length - 1
    for (let i = 0; i < events; i++) times.push(performance.now())
  }
  return times.slice(1).map((t, i) => t - (times[i] as number))
}

/** Pool a streams while `during` runs: its gaps, and how long `during` took. */
async function gapsWhile(
  url: string,
  during: () => Promise<unknown>
): Promise<{ gaps: number[]; ms: number }> {
  const state = { running: true }
  const gaps: number[] = []
  const stream = (async () => {
    for (let i = 0; state.running && i < 10_000; i++) gaps.push(...(await streamGaps(url, `stream ${i}`, 32)))
  })()
  const start = performance.now()
  await during()
  const ms = performance.now() - start
  state.running = false
  await stream
  return { gaps, ms }
}

async function uploadPhase(mux: RpcMux, upload: string, streamUrl: string) {
  const listener = await listenRpcMux(mux, { pool: 'c' })
  const load = async (): Promise<void> => {
    const rpc = [listener.endpoint]
    const server = await startLlamaServer({
      binary: bins.llamaServer,
      model: upload,
      logger,
      rpc,
      extraArgs: ['--no-warmup']
    })
    await server.stop()
  }
  try {
    const alone = performance.now()
    await load()
    const loadAloneMs = performance.now() - alone
    const quiet = await gapsWhile(streamUrl, () => new Promise((resolve) => setTimeout(resolve, 3_000)))
    const busy = await gapsWhile(streamUrl, load)
    return { loadAloneMs, loadBusyMs: busy.ms, quiet: quiet.gaps, busy: busy.gaps }
  } finally {
    await listener.close()
  }
}

const bins = await ensureBinaries({ logger })
const paths = { a: await ensureModel(MODELS.a, { logger }), b: await ensureModel(MODELS.b, { logger }) }
const uploadModel = await ensureModel(UPLOAD, { logger })
const rpc = await startRpcServer({ binary: bins.rpcServer, logger })
const { scheduler, hold } = switchable()
const mux = await startRpcMux({ upstreamPort: rpc.port, logger, scheduler })
const listeners: MuxListener[] = []
const servers: Partial<Record<Pool, LlamaServer>> = {}
try {
  for (const pool of ['a', 'b'] as const) {
    const listener = await listenRpcMux(mux, { pool })
    listeners.push(listener)
    servers[pool] = await startLlamaServer({
      binary: bins.llamaServer,
      model: paths[pool],
      logger,
      rpc: [listener.endpoint]
    })
  }
  const both = servers as Record<Pool, LlamaServer>
  for (const pool of ['a', 'b'] as const) await generate(both[pool].url, 'warm up', 8)
  say(`each phase ${durationMs / 1000} s, weights a=${wa} b=${wb}, hold ${holdMs} ms`)
  const soloA = await phase(mux, both, ['a'])
  say('solo a done')
  const soloB = await phase(mux, both, ['b'])
  say('solo b done')
  hold(true)
  const fair = await phase(mux, both, ['a', 'b'])
  say('concurrent (hold) done')
  hold(false)
  const conserving = await phase(mux, both, ['a', 'b'])
  say('concurrent (work-conserving) done')
  hold(true)
  const upload = await uploadPhase(mux, uploadModel, both.a.url)
  say('upload done')

  const share = (r: Map<Pool, PoolResult>, pool: Pool): number => {
    const total = [...r.values()].reduce((sum, x) => sum + x.computeMs, 0)
    return total > 0 ? (r.get(pool)?.computeMs ?? 0) / total : 0
  }
  const busy = (r: Map<Pool, PoolResult>): string =>
    `${((100 * [...r.values()].reduce((sum, x) => sum + x.computeMs, 0)) / durationMs).toFixed(0)} %`
  const fmt = (n: number | undefined, digits = 1): string => (n ?? 0).toFixed(digits)
  const rows = (['a', 'b'] as const).map((pool) => {
    const solo = pool === 'a' ? soloA : soloB
    return [
      `${pool} (weight ${WEIGHTS[pool]})`,
      `${fmt(solo.get(pool)?.tokensPerSecond)} tok/s, ${busy(solo)} busy`,
      `${fmt(100 * share(fair, pool))} %`,
      fmt(fair.get(pool)?.tokensPerSecond),
      `${fmt(100 * share(conserving, pool))} %`,
      fmt(conserving.get(pool)?.tokensPerSecond)
    ]
  })
  const header = [
    'pool',
    'solo',
    `both, hold ${holdMs} ms: compute share`,
    'tok/s',
    'both, work-conserving: share',
    'tok/s'
  ]
  process.stdout.write(`${table(header, rows)}\n`)
  process.stdout.write(
    `rpc-server busy (compute measured / wall): hold ${busy(fair)}, work-conserving ${busy(conserving)}\n`
  )
  const gap = (gaps: readonly number[], q: number): string =>
    `${fmt([...gaps].sort((x, y) => x - y)[Math.min(gaps.length - 1, Math.floor(q * gaps.length))], 0)} ms`
  process.stdout.write(
    `${table(
      ['pool a streaming', 'p50 gap', 'p99 gap', 'max gap', 'pool c model load'],
      [
        [
          'alone',
          gap(upload.quiet, 0.5),
          gap(upload.quiet, 0.99),
          gap(upload.quiet, 1),
          `${fmt(upload.loadAloneMs / 1000, 2)} s (a idle)`
        ],
        [
          'while c loads',
          gap(upload.busy, 0.5),
          gap(upload.busy, 0.99),
          gap(upload.busy, 1),
          `${fmt(upload.loadBusyMs / 1000, 2)} s`
        ]
      ]
    )}\n`
  )
  const ratio = share(fair, 'a') / Math.max(1e-9, share(fair, 'b'))
  process.stdout.write(`compute ratio a:b with hold ${fmt(ratio, 2)} (target ${fmt(wa / wb, 2)})\n`)
  const path = await saveResult('mux-share', {
    machine: machine(),
    durationMs,
    weights: WEIGHTS,
    holdMs,
    tokensPerRequest: perRequest,
    model: SHAPE,
    phases: {
      soloA: Object.fromEntries(soloA),
      soloB: Object.fromEntries(soloB),
      concurrentHold: Object.fromEntries(fair),
      concurrentWorkConserving: Object.fromEntries(conserving),
      upload
    }
  })
  say(`saved ${path}`)
} finally {
  await Promise.all(Object.values(servers).map((s) => s.stop()))
  await Promise.all(listeners.map((l) => l.close()))
  mux.close()
  await rpc.stop()
}
