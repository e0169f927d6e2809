/**
 * The README's demo: a pool on one machine. Two real `mesh-agent join` processes (each with its
 * own ggml-rpc-server) are found over the mesh, this process plays the orchestrator (until
 * `mesh-orch` exists): it opens Noise-encrypted tunnels to them, starts llama-server with the
 * model split across the tunnels, and prints the plan and a completion.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import {
  TINY_MODEL,
  createLogger,
  ensureBinaries,
  ensureModel,
  layerRanges,
  modelLayout,
  readGguf,
  startLlamaServer,
  type LlamaServer
} from '@frankenstein-mesh/llama'
import {
  acquireLease,
  WorkerDirectory,
  createMeshNode,
  dialDiscovered,
  ephemeralPrivateKey,
  type MeshNode
} from '@frankenstein-mesh/mesh'
import { startRpcTunnel, type RpcTunnel } from '@frankenstein-mesh/tunnel'

const { values } = parseArgs({
  options: {
    prompt: { type: 'string', default: 'The mesh of many machines' },
    tokens: { type: 'string', default: '32' },
    help: { type: 'boolean', default: false }
  }
})
if (values.help) {
  console.log(
    'usage: scripts/demo.sh [--prompt TEXT] [--tokens N]\n\nRuns a two-worker pool on this machine and prints a completion served through it.'
  )
  process.exit(0)
}
const tokens = Number(values.tokens)
if (!Number.isInteger(tokens) || tokens < 1 || tokens > 4096) {
  console.error('demo: --tokens must be an integer from 1 to 4096')
  process.exit(2)
}

const POOL = 'demo'
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
const logger = createLogger({ name: 'demo', level: process.env['FM_LOG_LEVEL'] ?? 'warn' })
const mib = (bytes: number): string => `${(bytes / 1024 ** 2).toFixed(2)} MiB`
const agents: ChildProcess[] = []
const tunnels: RpcTunnel[] = []
let node: MeshNode | undefined
let llama: LlamaServer | undefined
const scratch = await mkdtemp(join(tmpdir(), 'fm-demo-'))

/** Starts `mesh-agent join` and returns its peer id once it says it is ready. */
async function startAgent(name: string, rpcServer: string, bootstrap: string): Promise<string> {
  const args = [
    'join',
    '--pool',
    POOL,
    '--identity',
    join(scratch, `${name}.key`),
    '--listen',
    '/ip4/127.0.0.1/tcp/0',
    '--rpc-server-bin',
    rpcServer,
    '--bootstrap',
    bootstrap
  ]
  const child = spawn(process.execPath, [AGENT, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, FM_LOG_LEVEL: 'warn' }
  })
  agents.push(child)
  return await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', (line) =>
      resolve((JSON.parse(line) as { peerId: string }).peerId)
    )
    child.once('exit', (code) => reject(new Error(`mesh-agent ${name} exited with ${code}`)))
  })
}

try {
  const bins = await ensureBinaries({ logger })
  const model = await ensureModel(TINY_MODEL, { logger })
  const layout = modelLayout(await readGguf(model))
  const origin =
    bins.build === undefined
      ? bins.source
      : `${bins.build.commit.slice(0, 9)}, RPC ${bins.build.rpcProtocol}, ${bins.build.backend}`
  console.log(`llama.cpp binaries: ${bins.source} (${origin})`)
  console.log(`model: ${model} (${layout.layerCount} layers, ${mib(layout.totalBytes)})`)

  // The orchestrator: finds workers by mDNS, and lets them find it through itself as a bootstrap peer
  // (where multicast does not work on loopback); nobody types a worker's address.
  node = await createMeshNode({
    privateKey: await ephemeralPrivateKey(),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    mdns: true,
    mdnsIntervalMs: 500
  })
  dialDiscovered(node, logger)
  const directory = new WorkerDirectory({ node, pool: POOL, logger, refreshMs: 500 })
  directory.start()
  const started = performance.now()
  const bootstrap = node.getMultiaddrs()[0]?.toString() ?? ''
  const ids = await Promise.all(
    ['worker-1', 'worker-2'].map((name) => startAgent(name, bins.rpcServer, bootstrap))
  )
  while (directory.list().length < ids.length) {
    if (performance.now() - started > 30_000)
      throw new Error(`found ${directory.list().length} of ${ids.length} workers in 30 s`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  directory.stop()
  console.log(
    `found ${ids.length} workers of pool "${POOL}" over the mesh in ${((performance.now() - started) / 1000).toFixed(2)} s`
  )

  const workers = ids.map((id) => directory.get(id)).filter((w) => w !== undefined)
  for (const worker of workers) {
    const { lease } = await acquireLease({ node, peer: worker.peer, pool: POOL, logger })
    console.log(`lease ${lease.id} on ${worker.peer.toString()} for pool "${POOL}"`)
    tunnels.push(await startRpcTunnel({ node, peer: worker.peer, logger }))
  }
  const split = workers.map(() => 1)
  const loadStarted = performance.now()
  llama = await startLlamaServer({
    binary: bins.llamaServer,
    model,
    logger,
    rpc: tunnels.map((t) => t.endpoint),
    tensorSplit: split
  })
  console.log(
    `llama-server loaded the model through the encrypted tunnels in ${((performance.now() - loadStarted) / 1000).toFixed(2)} s`
  )

  console.log(`plan (--tensor-split ${split.join(',')}):`)
  const ranges = layerRanges(layout.layerCount, split)
  for (const [i, worker] of workers.entries()) {
    const range = ranges[i]
    const layers = range === null || range === undefined ? 'no layers' : `layers ${range[0]}-${range[1]}`
    const output = i === workers.length - 1 ? ' + output' : ''
    const tunnel = tunnels[i] as RpcTunnel
    const reported = llama.buffers.find((b) => b.device.includes(tunnel.endpoint))
    const uploaded = tunnel.traffic().reduce((sum, t) => sum + t.uploadBytes, 0)
    console.log(
      `  worker ${i + 1} ${worker.peer.toString()} via ${tunnel.endpoint}: ${layers}${output}, ${reported?.modelMiB.toFixed(2) ?? '?'} MiB of weights, ${mib(uploaded)} sent through its tunnel`
    )
  }

  const res = await fetch(`${llama.url}/completion`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: values.prompt, n_predict: tokens, temperature: 0 }),
    signal: AbortSignal.timeout(120_000)
  })
  if (!res.ok) throw new Error(`llama-server answered HTTP ${res.status}: ${await res.text()}`)
  const body = (await res.json()) as { content: string; timings?: { predicted_per_second?: number } }
  console.log(`prompt: ${JSON.stringify(values.prompt)}`)
  console.log(`completion: ${JSON.stringify(body.content)}`)
  console.log(`${tokens} tokens at ${body.timings?.predicted_per_second?.toFixed(1) ?? '?'} tok/s`)
} catch (err) {
  const code = (err as { code?: string }).code
  console.error(`demo: ${(err as Error).message}${code === undefined ? '' : ` [${code}]`}`)
  process.exitCode = 1
} finally {
  await llama?.stop()
  await Promise.all(tunnels.map((t) => t.close()))
  await Promise.all(
    agents.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) {
            resolve()
            return
          }
          child.once('exit', () => resolve())
          child.kill('SIGTERM')
        })
    )
  )
  await node?.stop()
  await rm(scratch, { recursive: true, force: true })
}
