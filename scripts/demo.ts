/**
 * The README's demo: a completion served by llama-server with the model split across two
 * ggml-rpc-servers, showing which layers each one holds. Until the mesh exists this is the
 * direct-RPC baseline on loopback; later issues route the same traffic through the mesh.
 */
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
  startRpcServer,
  type LlamaServer,
  type RpcServer
} from '@frankenstein-mesh/llama'

const { values } = parseArgs({
  options: {
    prompt: { type: 'string', default: 'The mesh of many machines' },
    tokens: { type: 'string', default: '32' },
    help: { type: 'boolean', default: false }
  }
})
if (values.help) {
  console.log(
    'usage: scripts/demo.sh [--prompt TEXT] [--tokens N]\n\nSplits a generated model across two rpc-servers and prints a completion.'
  )
  process.exit(0)
}
const tokens = Number(values.tokens)
if (!Number.isInteger(tokens) || tokens < 1 || tokens > 4096) {
  console.error('demo: --tokens must be an integer from 1 to 4096')
  process.exit(2)
}

const logger = createLogger({ name: 'demo', level: process.env['FM_LOG_LEVEL'] ?? 'warn' })
const mib = (bytes: number): string => `${(bytes / 1024 ** 2).toFixed(2)} MiB`
const split = [1, 1]
const workers: RpcServer[] = []
let llama: LlamaServer | undefined

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

  for (let i = 0; i < split.length; i++)
    workers.push(await startRpcServer({ binary: bins.rpcServer, logger }))
  const started = performance.now()
  llama = await startLlamaServer({
    binary: bins.llamaServer,
    model,
    logger,
    rpc: workers.map((w) => w.endpoint),
    tensorSplit: split
  })
  console.log(
    `llama-server loaded the model over RPC in ${((performance.now() - started) / 1000).toFixed(2)} s`
  )

  console.log('plan (--tensor-split ' + split.join(',') + '):')
  const ranges = layerRanges(layout.layerCount, split)
  for (const [i, worker] of workers.entries()) {
    const range = ranges[i]
    const layers = range === null || range === undefined ? 'no layers' : `layers ${range[0]}-${range[1]}`
    const output = i === workers.length - 1 ? ' + output' : ''
    const reported = llama.buffers.find((b) => b.device.includes(worker.endpoint))
    console.log(
      `  rpc-server ${i + 1} ${worker.endpoint} (pid ${worker.process.pid}): ${layers}${output}, ${reported?.modelMiB.toFixed(2) ?? '?'} MiB of weights`
    )
  }

  const t0 = performance.now()
  const res = await fetch(`${llama.url}/completion`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: values.prompt, n_predict: tokens, temperature: 0 }),
    signal: AbortSignal.timeout(120_000)
  })
  if (!res.ok) throw new Error(`llama-server answered HTTP ${res.status}: ${await res.text()}`)
  const body = (await res.json()) as { content: string; timings?: { predicted_per_second?: number } }
  const seconds = (performance.now() - t0) / 1000
  console.log(`prompt: ${JSON.stringify(values.prompt)}`)
  console.log(`completion: ${JSON.stringify(body.content)}`)
  console.log(
    `${tokens} tokens in ${seconds.toFixed(2)} s (${body.timings?.predicted_per_second?.toFixed(1) ?? '?'} tok/s generation)`
  )
} catch (err) {
  const code = (err as { code?: string }).code
  console.error(`demo: ${(err as Error).message}${code === undefined ? '' : ` [${code}]`}`)
  process.exitCode = 1
} finally {
  await llama?.stop()
  await Promise.all(workers.map((w) => w.stop()))
}
