/**
 * Direct RPC vs a plain two-hop TCP proxy chain vs the same chain sealing each read with
 * ChaCha20-Poly1305 (the floor for a Noise tunnel in Node) vs our libp2p tunnel, side by side in
 * one run: bulk MB/s, 4 KiB round trips (p50/p99), the CPU time of each path's own processes per
 * GB and per round trip, and end to end (llama-server over two real rpc-servers) tokens/s and
 * model load time for the tiny and the ~1.5 GB model. Rounds alternate the paths so that the
 * ratios hold on a noisy machine.
 *
 * --scenario shaped runs the far side (rpc-servers, agents) in a network namespace of its own,
 * behind a veth link rate-limited to 1 Gbit/s (tbf) with a delay relay holding each direction for
 * 10 ms (20 ms RTT; this kernel has no netem). Needs root.
 *
 * --baseline <dir> adds the tunnel of another checkout of this repository (its own mesh-agent and
 * tunnel end, from its bench/paths.ts; dependencies installed there) as one more path, so that a
 * change to the tunnel is measured before and after in the same rounds:
 *   git worktree add /tmp/fm-base <commit> && (cd /tmp/fm-base && pnpm install --frozen-lockfile)
 *   node bench/tunnel.ts --baseline /tmp/fm-base
 *
 * --sharing concurrent runs the tunnel's agents with `--sharing concurrent` in the end-to-end part,
 * so that llama-server's sessions pass the agent's RPC multiplexer (the transport part, whose
 * stand-in rpc-server the multiplexer's checks would refuse, stays exclusive).
 *
 * Usage: node bench/tunnel.ts [--scenario loopback|shaped] [--rounds N] [--skip-large]
 *                             [--bulk-mib N] [--round-trips N] [--baseline DIR]
 *                             [--sharing exclusive|concurrent]
 */
import { spawn } from 'node:child_process'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import {
  LARGE_MODEL,
  TINY_MODEL,
  createLogger,
  ensureBinaries,
  ensureModel,
  startLlamaServer,
  type LlamaBinaries,
  type LlamaModelSpec
} from '@frankenstein-mesh/llama'
import { generate, machine, median, saveResult, table } from './lib.ts'
import { createNetwork, netnsAvailable } from '../test/fixtures/netns.ts'
import {
  acrossLink,
  directPath,
  loopback,
  proxyPath,
  sealedPath,
  startFar,
  stopAll,
  tunnelPath,
  type PathName,
  type RpcPath,
  type Topology
} from './paths.ts'
import { bulkThroughput, percentile, roundTrips } from './transport.ts'
import { cpuSeconds } from '../test/fixtures/proc-figures.ts'

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    'skip-large': { type: 'boolean', default: false },
    'bulk-mib': { type: 'string', default: '512' },
    'round-trips': { type: 'string', default: '2000' },
    scenario: { type: 'string', default: 'loopback' },
    'far-netns': { type: 'string' },
    'far-address': { type: 'string' },
    baseline: { type: 'string' },
    sharing: { type: 'string', default: 'exclusive' }
  }
})
const rounds = Number(values.rounds)
// bulkThroughput sends 16 MiB frames; MB/s and CPU per GB divide by this figure.
if (!(Number(values['bulk-mib']) >= 16 && Number(values['bulk-mib']) % 16 === 0))
  throw new Error(`--bulk-mib is a multiple of 16, not ${values['bulk-mib']}`)
if (values.sharing !== 'exclusive' && values.sharing !== 'concurrent')
  throw new Error(`--sharing is exclusive or concurrent, not ${values.sharing}`)
const sharing = values.sharing
const logger = createLogger({ name: 'bench', level: 'warn' })
const baseline =
  values.baseline === undefined
    ? undefined
    : ((await import(join(resolve(values.baseline), 'bench', 'paths.ts'))) as {
        // A checkout from before the CPU columns does not list its processes.
        tunnelPath: (
          ...args: Parameters<typeof tunnelPath>
        ) => Promise<Omit<RpcPath, 'pids'> & { pids?: number[] }>
      })
const PATHS: readonly PathName[] =
  baseline === undefined
    ? ['direct', 'proxy', 'sealed', 'tunnel']
    : ['direct', 'proxy', 'sealed', 'baseline', 'tunnel']
const say = (text: string): void => void process.stderr.write(`${text}\n`)

/** `concurrent`: our tunnel's agents multiplex, and hold rpc-servers of their own (`tunnelPorts`). */
interface TunnelOptions {
  readonly sharing: 'exclusive' | 'concurrent'
  readonly ports: readonly number[]
}

async function buildPaths(
  topology: Topology,
  ports: readonly number[],
  tunnel: TunnelOptions = { sharing: 'exclusive', ports }
): Promise<Record<PathName, RpcPath>> {
  const paths: Partial<Record<PathName, RpcPath>> = {
    direct: await directPath(topology, ports),
    proxy: await proxyPath(topology, ports),
    sealed: await sealedPath(topology, ports),
    tunnel: await tunnelPath(topology, tunnel.ports, tunnel.sharing)
  }
  if (baseline !== undefined) {
    const path = await baseline.tunnelPath(topology, ports)
    paths.baseline = { ...path, pids: path.pids ?? [] }
  }
  return paths as Record<PathName, RpcPath>
}

interface TransportFigures {
  mbPerSecond: number[]
  p50us: number[]
  p99us: number[]
  /** CPU of the path's own processes (relays, tunnel ends), per GB uploaded and per round trip. */
  cpuSecondsPerGB: number[]
  cpuUsPerRoundTrip: number[]
}

/** CPU seconds used so far by all of `pids` together. */
const cpuOf = (pids: readonly number[]): number =>
  pids.reduce((sum, pid) => sum + (cpuSeconds(pid) ?? NaN), 0)

async function transport(topology: Topology): Promise<Record<PathName, TransportFigures>> {
  const sink = await startFar(topology, 'rpc-sink-process.ts', ['127.0.0.1'])
  const paths = await buildPaths(topology, [sink.port])
  const out = Object.fromEntries(
    PATHS.map((p) => [
      p,
      { mbPerSecond: [], p50us: [], p99us: [], cpuSecondsPerGB: [], cpuUsPerRoundTrip: [] }
    ])
  ) as unknown as Record<PathName, TransportFigures>
  const bulkMiB = Number(values['bulk-mib'])
  const count = Number(values['round-trips'])
  try {
    for (let round = 0; round < rounds; round++) {
      for (const name of PATHS) {
        const endpoint = paths[name].endpoints[0] as string
        const pids = paths[name].pids
        const cpu0 = cpuOf(pids)
        const mb = await bulkThroughput(endpoint, bulkMiB)
        const cpu1 = cpuOf(pids)
        const rtt = await roundTrips(endpoint, count)
        const cpu2 = cpuOf(pids)
        const figures = out[name]
        figures.mbPerSecond.push(mb)
        figures.p50us.push(percentile(rtt, 50))
        figures.p99us.push(percentile(rtt, 99))
        // No processes of its own (direct, or a --baseline from before this column): no figure.
        const own = pids.length > 0 ? 1 : NaN
        figures.cpuSecondsPerGB.push((own * (cpu1 - cpu0)) / ((bulkMiB * 1024 ** 2) / 1e9))
        // roundTrips makes 100 warm-up round trips before the `count` it times.
        figures.cpuUsPerRoundTrip.push((own * (cpu2 - cpu1) * 1e6) / (count + 100))
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

async function endToEnd(topology: Topology, bins: LlamaBinaries, specs: Array<[LlamaModelSpec, number]>) {
  const startWorkers = () =>
    Promise.all([0, 1].map(() => startFar(topology, 'rpc-server-process.ts', [bins.rpcServer])))
  const workers = await startWorkers()
  // A multiplexer is its rpc-server's one client: concurrent agents get rpc-servers of their own.
  const tunnelWorkers = sharing === 'concurrent' ? await startWorkers() : workers
  const paths = await buildPaths(
    topology,
    workers.map((w) => w.port),
    { sharing, ports: tunnelWorkers.map((w) => w.port) }
  )
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
    await stopAll([...new Set([...workers, ...tunnelWorkers])].map((w) => w.child))
  }
  return results
}

/** Shaped: build the two hosts, then run this bench again inside the near one. */
async function runShaped(): Promise<void> {
  const netns = await netnsAvailable()
  if (!netns.ok) throw new Error(`the shaped scenario needs network namespaces: ${netns.reason}`)
  const network = await createNetwork({ name: 'bench', hosts: 2 })
  try {
    const [near, far] = network.hosts
    if (near === undefined || far === undefined) throw new Error('network without hosts')
    for (const host of network.hosts) await network.shape(host, { rateMbit: 1000 })
    const args = process.argv.slice(2).filter((a) => !a.startsWith('--scenario') && a !== 'shaped')
    const inner = spawn(
      'ip',
      [
        'netns',
        'exec',
        near.name,
        process.execPath,
        import.meta.filename,
        ...args,
        '--scenario',
        'shaped-inner',
        '--far-netns',
        far.name,
        '--far-address',
        far.address
      ],
      { stdio: 'inherit' }
    )
    const code = await new Promise<number | null>((resolve) => inner.once('exit', resolve))
    if (code !== 0) throw new Error(`shaped run exited with ${code}`)
  } finally {
    await network.destroy()
  }
}

if (values.scenario === 'shaped') {
  await runShaped()
  process.exit(0)
}
const shaped = values.scenario === 'shaped-inner'
const topology = shaped ? acrossLink(values['far-netns'] ?? '', values['far-address'] ?? '', 10) : loopback()
const bins = await ensureBinaries({ logger })
const specs: Array<[LlamaModelSpec, number]> = [[TINY_MODEL, 64]]
if (!values['skip-large']) specs.push([LARGE_MODEL, 16])
const transportResult = await transport(topology)
const e2e = await endToEnd(topology, bins, specs)
await topology.stop()
const scenario = shaped ? 'shaped link (1 Gbit/s, 20 ms RTT, netns)' : 'loopback'
const path = await saveResult(shaped ? 'tunnel-shaped' : 'tunnel', {
  bench: 'tunnel',
  scenario,
  date: new Date().toISOString(),
  machine: machine(),
  rounds,
  transport: transportResult,
  endToEnd: e2e
})

const f = (n: number, digits = 0): string => n.toFixed(digits)
const orDash = (n: number, digits = 0): string => (Number.isNaN(n) ? '-' : f(n, digits))
/** Median of per-round ratios: each round measured both paths back to back, so noise cancels. */
const ratio = (path: readonly number[], direct: readonly number[]): string =>
  median(path.map((v, i) => v / (direct[i] ?? NaN))).toFixed(2)
const t = transportResult
console.log(`Transport (${scenario}): bulk MB/s and 4 KiB round trip, medians\n`)
console.log(
  table(
    ['path', 'bulk MB/s', 'vs direct', 'RTT p50 us', 'RTT p99 us', 'CPU s/GB', 'CPU us/RTT'],
    PATHS.map((p) => [
      p,
      f(median(t[p].mbPerSecond)),
      ratio(t[p].mbPerSecond, t.direct.mbPerSecond),
      f(median(t[p].p50us)),
      f(median(t[p].p99us)),
      orDash(median(t[p].cpuSecondsPerGB), 2),
      orDash(median(t[p].cpuUsPerRoundTrip))
    ])
  )
)
console.log(`\nEnd to end (${scenario}, llama-server over two rpc-servers), medians\n`)
console.log(
  table(
    ['model', 'path', 'tok/s', 'vs direct', 'load s', 'vs direct', 'same tokens'],
    e2e.flatMap((m) =>
      PATHS.map((p) => [
        m.model,
        p,
        f(median(m.paths[p].tokensPerSecond), 1),
        ratio(m.paths[p].tokensPerSecond, m.paths.direct.tokensPerSecond),
        f(median(m.paths[p].loadSeconds), 2),
        ratio(m.paths[p].loadSeconds, m.paths.direct.loadSeconds),
        m.identicalTokens ? 'yes' : 'NO'
      ])
    )
  )
)
console.log(
  `\n${rounds} alternating rounds; "vs direct" is the median of per-round ratios; raw figures in ${path}`
)
