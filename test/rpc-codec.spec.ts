import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import {
  TINY_MODEL,
  connectRpc,
  modelLayout,
  readGguf,
  silentLogger,
  startLlamaServer,
  startRpcServer,
  type LlamaServer,
  type RpcServer
} from '@frankenstein-mesh/llama'
import { createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'
import { startMeteringProxy, type MeteringProxy } from './fixtures/metering-proxy.ts'

/** The RPC codec against the bytes a real llama-server and a real rpc-server exchange. */
describe('RPC codec on real traffic', { timeout: 180_000 }, () => {
  const logger = silentLogger()
  let scratch: Scratch
  let rpc: RpcServer
  let proxy: MeteringProxy
  let llama: LlamaServer | undefined
  let modelPath: string

  before(async () => {
    const bins = await testBinaries()
    scratch = await createScratch('codec')
    modelPath = await scratch.model(TINY_MODEL)
    rpc = await startRpcServer({ binary: bins.rpcServer, logger })
    proxy = await startMeteringProxy(rpc.port)
    llama = await startLlamaServer({
      binary: bins.llamaServer,
      model: modelPath,
      logger,
      rpc: [`127.0.0.1:${proxy.port}`]
    })
    await greedyCompletion(llama.url, 'Hello world', 16)
    await llama.stop()
    llama = undefined
  })

  after(async () => {
    await llama?.stop()
    await proxy.close()
    await rpc.stop()
    await scratch.remove()
  })

  it('parses every connection of a load and a completion without a protocol error', () => {
    assert.ok(proxy.connections.length >= 2, 'llama-server opens probe connections and a session')
    for (const connection of proxy.connections) {
      assert.deepEqual(connection.errors, [])
      assert.equal(connection.commands.get('HELLO'), 1)
      assert.equal(connection.boundaryAtClose, true, 'connections end between frames')
    }
  })

  it('matches every response to a command that asked for one', () => {
    for (const connection of proxy.connections) {
      assert.equal(connection.pendingAtClose, 0)
      for (const [name, count] of connection.responses) {
        assert.equal(count, connection.commands.get(name), `${name}: responses vs commands`)
      }
    }
  })

  it('sees the whole model upload as SET_TENSOR bodies, and per-token compute', async () => {
    const layout = modelLayout(await readGguf(modelPath))
    const session = proxy.connections.reduce((a, b) => (a.uploadBytes >= b.uploadBytes ? a : b))
    const offloaded = layout.totalBytes - layout.inputBytes
    assert.ok(session.uploadBytes >= offloaded, `uploaded ${session.uploadBytes} of ${offloaded} model bytes`)
    assert.ok((session.commands.get('ALLOC_BUFFER') ?? 0) > 0)
    const computes =
      (session.commands.get('GRAPH_COMPUTE') ?? 0) + (session.commands.get('GRAPH_RECOMPUTE') ?? 0)
    assert.ok(computes >= 16, `one compute per generated token at least, saw ${computes}`)
    assert.ok((session.commands.get('GET_TENSOR') ?? 0) > 0, 'activations come back with GET_TENSOR')
  })

  it('answers HELLO, DEVICE_COUNT and GET_DEVICE_MEMORY with the small client', async () => {
    const client = await connectRpc({ port: rpc.port })
    try {
      assert.deepEqual(client.version, { major: 6, minor: 0, patch: 0 })
      const count = await client.deviceCount()
      assert.ok(count >= 1)
      const memory = await client.deviceMemory(0)
      assert.ok(memory.total > 0 && memory.free <= memory.total)
    } finally {
      client.close()
    }
  })

  it('times out with a clear error while rpc-server serves another client', async () => {
    const first = await connectRpc({ port: rpc.port })
    try {
      await assert.rejects(connectRpc({ port: rpc.port, timeoutMs: 500 }), { code: 'ERR_RPC_TIMEOUT' })
    } finally {
      first.close()
    }
  })
})
