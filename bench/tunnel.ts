/**
 * Direct RPC vs a plain two-hop TCP proxy chain vs our libp2p tunnel, side by side in one run:
 * bulk MB/s, 4 KiB round trips (p50/p99), and end to end (llama-server over two real
 * rpc-servers) tokens/s and model load time for the tiny and the ~1.5 GB model. Rounds alternate
 * the paths so that the ratios hold on a noisy machine.
 *
 * Usage: node bench/tunnel.ts [--rounds N] [--skip-large] [--bulk-mib N] [--round-trips N]
 */
import { join } from 'node:path'
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
  type LlamaModelSpec
} from '@frankenstein-mesh/llama'
import { generate, machine, median, saveResult, table } from './lib.ts'
import {
  directPath,
  proxyPath,
  spawnReady,
  stopAll,
  tunnelPath,
  type PathName,
  type RpcPath
} from './paths.ts'
import { bulkThroughput, percentile, roundTrips } from './transport.ts'

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    'skip-large': { type: 'boolean', default: false },
    'bulk-mib': { type: 'string', default: '512' },
    'round-trips': { type: 'string', default: '2000' }
  }
})
const rounds = Number(values.rounds)
const logger = createLogger({ name: 'bench', level: 'warn' })
const PATHS: readonly PathName[] = ['direct', 'proxy', 'tunnel']
const say = (text: string): void => void process.stderr.write(`${text}\n`)

async function buildPaths(targets: readonly string[]): Promise<Record<PathName, RpcPath>> {
  return { direct: directPath(targets), proxy: await proxyPath(targets), tunnel: await tunnelPath(targets) }
}

async function transport(): Promise<
  Record<PathName, { mbPerSecond: number[]; p50us: number[]; p99us: number[] }>
> {
  const sink = await spawnReady(join(import.meta.dirname, 'tools', 'rpc-sink-process.ts'), [])
  const paths = await buildPaths([`127.0.0.1:${String(sink.line['port'])}`])
  const out = Object.fromEntries(
    PATHS.map((p) => [p, { mbPerSecond: [] as number[], p50us: [] as number[], p99us: [] as number[] }])
  ) as Record<PathName, { mbPerSecond: number[]; p50us: number[]; p99us: number[] }>
  try {
    for (let round = 0; round < rounds; round++) {
      for (const name of PATHS) {
        const endpoint = paths[name].endpoints[0] as string
        const mb = await bulkThroughput(endpoint, Number(values['bulk-mib']))
        const rtt = await roundTrips(endpoint, Number(values['round-trips']))
        out[name].mbPerSecond.push(mb)
        out[name].p50us.push(percentile(rtt, 50))
        out[name].p99us.push(percentile(rtt, 99))
        say(
          `transport round ${round + 1} ${name}: ${mb.toFixed(0)} MB/s, p50 ${percentile(rtt, 50).toFixed(0)} us, p99 ${percentile(rtt, 99).toFixed(0)} us`
        )
      }
    }
  } finally {
    await Promise.all(PATHS.map((p) => paths[p].stop()))
    await stopAll([sink.child])
  }
  return out
}

async function endToEnd(bins: LlamaBinaries, specs: Array<[LlamaModelSpec, number]>) {
  const workers = await Promise.all([0, 1].map(() => startRpcServer({ binary: bins.rpcServer, logger })))
  const paths = await buildPaths(workers.map((w) => w.endpoint))
  const results = []
  try {
    for (const [spec, tokens] of specs) {
      const model = await ensureModel(spec, { logger })
      const per = Object.fromEntries(
        PATHS.map((p) => [p, { loadSeconds: [] as number[], tokensPerSecond: [] as number[] }])
      ) as Record<PathName, { loadSeconds: number[]; tokensPerSecond: number[] }>
      const outputs = new Set<string>()
      for (let round = 0; round < rounds; round++) {
        for (const name of PATHS) {
          const started = performance.now()
          const server = await startLlamaServer({
            binary: bins.llamaServer,
            model,
            logger,
            rpc: paths[name].endpoints,
            tensorSplit: [1, 1],
            readyTimeoutMs: 600_000
          })
          const load = (performance.now() - started) / 1000
          try {
            await generate(server.url, 'The mesh of many machines', 4)
            const run = await generate(server.url, 'The mesh of many machines', tokens)
            outputs.add(run.tokens.join(','))
            per[name].loadSeconds.push(load)
            per[name].tokensPerSecond.push(run.tokensPerSecond)
            say(
              `${spec.name} round ${round + 1} ${name}: load ${load.toFixed(2)} s, ${run.tokensPerSecond.toFixed(1)} tok/s`
            )
          } finally {
            await server.stop()
          }
        }
      }
      results.push({ model: spec.name, tokens, identicalTokens: outputs.size === 1, paths: per })
    }
  } finally {
    await Promise.all(PATHS.map((p) => paths[p].stop()))
    await Promise.all(workers.map((w) => w.stop()))
  }
  return results
}

const bins = await ensureBinaries({ logger })
const specs: Array<[LlamaModelSpec, number]> = [[TINY_MODEL, 64]]
if (!values['skip-large']) specs.push([LARGE_MODEL, 16])
const transportResult = await transport()
const e2e = await endToEnd(bins, specs)
const path = await saveResult('tunnel', {
  bench: 'tunnel',
  scenario: 'loopback',
  date: new Date().toISOString(),
  machine: machine(),
  rounds,
  transport: transportResult,
  endToEnd: e2e
})

const f = (n: number, digits = 0): string => n.toFixed(digits)
const ratio = (a: number, b: number): string => (a / b).toFixed(2)
const t = transportResult
console.log('Transport (loopback): bulk MB/s and 4 KiB round trip, medians\n')
console.log(
  table(
    ['path', 'bulk MB/s', 'vs direct', 'RTT p50 us', 'RTT p99 us'],
    PATHS.map((p) => [
      p,
      f(median(t[p].mbPerSecond)),
      ratio(median(t[p].mbPerSecond), median(t.direct.mbPerSecond)),
      f(median(t[p].p50us)),
      f(median(t[p].p99us))
    ])
  )
)
console.log('\nEnd to end (llama-server over two rpc-servers), medians\n')
console.log(
  table(
    ['model', 'path', 'tok/s', 'vs direct', 'load s', 'vs direct', 'same tokens'],
    e2e.flatMap((m) =>
      PATHS.map((p) => [
        m.model,
        p,
        f(median(m.paths[p].tokensPerSecond), 1),
        ratio(median(m.paths[p].tokensPerSecond), median(m.paths.direct.tokensPerSecond)),
        f(median(m.paths[p].loadSeconds), 2),
        ratio(median(m.paths[p].loadSeconds), median(m.paths.direct.loadSeconds)),
        m.identicalTokens ? 'yes' : 'NO'
      ])
    )
  )
)
console.log(`\n${rounds} alternating rounds; raw figures in ${path}`)
