import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import {
  TINY_MODEL,
  describeExit,
  silentLogger,
  startLlamaServer,
  startRpcServer,
  type LlamaBinaries
} from '@frankenstein-mesh/llama'
import { createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'

describe('supervising the real binaries', { timeout: 120_000 }, () => {
  const logger = silentLogger()
  let bins: LlamaBinaries
  let scratch: Scratch
  let model: string

  before(async () => {
    bins = await testBinaries()
    scratch = await createScratch('supervision')
    model = await scratch.model(TINY_MODEL)
  })
  after(async () => {
    await scratch.remove()
  })

  it('stops rpc-server with SIGTERM and reports it as requested', async () => {
    const rpc = await startRpcServer({ binary: bins.rpcServer, logger })
    const exit = await rpc.stop()
    assert.equal(exit.requested, true)
    assert.equal(rpc.process.running, false)
  })

  it('reports an rpc-server killed behind our back', async () => {
    const rpc = await startRpcServer({ binary: bins.rpcServer, logger })
    process.kill(rpc.process.pid as number, 'SIGKILL')
    const exit = await rpc.process.exited
    assert.equal(exit.requested, false)
    assert.equal(describeExit(exit), 'killed by SIGKILL')
  })

  it("fails fast, with llama-server's own words, when the model does not exist", async () => {
    await assert.rejects(
      startLlamaServer({ binary: bins.llamaServer, model: `${scratch.dir}/missing.gguf`, logger }),
      (err: Error & { code?: string }) =>
        err.code === 'ERR_PROCESS_EXITED' && /exited with code/.test(err.message)
    )
  })

  it('sees llama-server abort when its rpc-server dies mid-session (no reconnect in llama.cpp)', async () => {
    const rpc = await startRpcServer({ binary: bins.rpcServer, logger })
    const llama = await startLlamaServer({ binary: bins.llamaServer, model, logger, rpc: [rpc.endpoint] })
    try {
      await greedyCompletion(llama.url, 'Hello', 4)
      process.kill(rpc.process.pid as number, 'SIGKILL')
      await rpc.process.exited
      await assert.rejects(greedyCompletion(llama.url, 'Hello again', 4))
      const exit = await llama.process.exited
      assert.equal(exit.requested, false)
      assert.equal(describeExit(exit), 'killed by SIGABRT')
    } finally {
      await llama.stop()
      await rpc.stop()
    }
  })
})
