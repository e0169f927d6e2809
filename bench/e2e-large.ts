import {
  LARGE_MODEL,
  createLogger,
  ensureBinaries,
  ensureModel,
  startLlamaServer,
  startRpcServer
} from '@frankenstein-mesh/llama'
import { generate } from './lib.ts'
import { directPath, proxyPath, tunnelPath } from './paths.ts'
const logger = createLogger({ name: 'b', level: 'warn' })
const bins = await ensureBinaries({ logger })
const model = await ensureModel(LARGE_MODEL, { logger })
const workers = await Promise.all([0, 1].map(() => startRpcServer({ binary: bins.rpcServer, logger })))
const targets = workers.map((w) => w.endpoint)
const paths = [directPath(targets), await proxyPath(targets), await tunnelPath(targets)]
for (let round = 0; round < 2; round++)
  for (const p of paths) {
    const t0 = performance.now()
    const s = await startLlamaServer({
      binary: bins.llamaServer,
      model,
      logger,
      rpc: p.endpoints,
      tensorSplit: [1, 1],
      readyTimeoutMs: 600000
    })
    const load = (performance.now() - t0) / 1000
    await generate(s.url, 'x', 2)
    const r = await generate(s.url, 'The mesh', 16)
    console.log(p.name, 'load', load.toFixed(2), 'tok/s', r.tokensPerSecond.toFixed(2))
    await s.stop()
  }
for (const p of paths) await p.stop()
for (const w of workers) await w.stop()
