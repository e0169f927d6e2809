import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import {
  TINY_MODEL,
  layerRanges,
  modelLayout,
  readGguf,
  silentLogger,
  startLlamaServer,
  startRpcServer,
  type LlamaBinaries,
  type LlamaServer,
  type RpcServer
} from '@frankenstein-mesh/llama'
import { PROMPTS, createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'

/**
 * The yardstick for every later tunnel: llama-server alone and llama-server with two real
 * rpc-servers on loopback give the same greedy tokens.
 */
describe('direct-RPC baseline', { timeout: 180_000 }, () => {
  const logger = silentLogger()
  const split = [1, 1]
  let bins: LlamaBinaries
  let scratch: Scratch
  let model: string
  let workers: RpcServer[] = []
  let local: LlamaServer | undefined
  let remote: LlamaServer | undefined

  before(async () => {
    bins = await testBinaries()
    scratch = await createScratch('baseline')
    model = await scratch.model(TINY_MODEL)
    workers = await Promise.all([0, 1].map(() => startRpcServer({ binary: bins.rpcServer, logger })))
    local = await startLlamaServer({ binary: bins.llamaServer, model, logger })
    remote = await startLlamaServer({
      binary: bins.llamaServer,
      model,
      logger,
      rpc: workers.map((w) => w.endpoint),
      tensorSplit: split
    })
  })

  after(async () => {
    await Promise.all([local?.stop(), remote?.stop(), ...workers.map((w) => w.stop())])
    await scratch.remove()
  })

  it('produces the same greedy tokens locally and over two rpc-servers', async () => {
    for (const prompt of PROMPTS) {
      const expected = await greedyCompletion((local as LlamaServer).url, prompt)
      const actual = await greedyCompletion((remote as LlamaServer).url, prompt)
      assert.equal(actual.tokens.length, 24)
      assert.deepEqual(actual.tokens, expected.tokens, `tokens differ for "${prompt}"`)
      assert.equal(actual.content, expected.content)
    }
  })

  it('places the layers on the rpc-servers as our model of --tensor-split predicts', async () => {
    const layout = modelLayout(await readGguf(model))
    const ranges = layerRanges(layout.layerCount, split)
    const reported = (remote as LlamaServer).buffers
    for (const [i, worker] of workers.entries()) {
      const range = ranges[i]
      assert.ok(range !== null && range !== undefined)
      const layers = layout.layerBytes.slice(range[0], range[1] + 1).reduce((a, b) => a + b, 0)
      const expected = layers + (i === workers.length - 1 ? layout.outputBytes : 0)
      const entry = reported.find((b) => b.device.includes(worker.endpoint))
      assert.ok(entry !== undefined, `llama-server reported no buffer on ${worker.endpoint}`)
      assert.ok(
        Math.abs(entry.modelMiB * 1024 ** 2 - expected) < 0.02 * 1024 ** 2,
        `${worker.endpoint}: ${entry.modelMiB} MiB`
      )
      const kvLayers = range[1] - range[0] + 1
      assert.equal(entry.kvMiB > 0, kvLayers > 0)
    }
  })

  it('reports the rpc-servers speak RPC protocol 6 with at least one device', () => {
    for (const worker of workers) {
      assert.equal(worker.version.major, 6)
      assert.ok(worker.devices.length >= 1)
      assert.ok((worker.devices[0]?.total ?? 0) > 0)
    }
  })
})
