/**
 * Compute sharing through the RPC multiplexer: two pools (weights 2:1 by default), each a real
 * llama-server with its own model, generate continuously through the multiplexer to one real
 * rpc-server. Phases, in one run: each pool alone, both at once with the fair-share hold, both
 * at once work-conserving (holdMs 0). For each: every pool's share of rpc-server compute time
 * (measured by the multiplexer) and its tokens/s.
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

const bins = await ensureBinaries({ logger })
const paths = { a: await ensureModel(MODELS.a, { logger }), b: await ensureModel(MODELS.b, { logger }) }
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
      concurrentWorkConserving: Object.fromEntries(conserving)
    }
  })
  say(`saved ${path}`)
} finally {
  await Promise.all(Object.values(servers).map((s) => s.stop()))
  await Promise.all(listeners.map((l) => l.close()))
  mux.close()
  await rpc.stop()
}
