import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { after, before, describe, it } from 'node:test'
import {
  RpcCommand,
  TINY_MODEL,
  encodeRequest,
  residentBytes,
  startLlamaServer,
  startRpcServer,
  silentLogger,
  type LlamaBinaries,
  type LlamaServer,
  type RpcServer
} from '@frankenstein-mesh/llama'
import { listenRpcMux, startRpcMux, type MuxListener, type RpcMux } from '@frankenstein-mesh/tunnel'
import {
  HELLO,
  RawSession,
  crossPoolAttacks,
  f32,
  Random,
  seedFromEnv,
  vulnerabilityShapes,
  withRealBuffer,
  type RealBuffer
} from './fixtures/fuzz.ts'
import {
  OTHER_MODEL,
  PROMPTS,
  createScratch,
  greedyCompletion,
  onDedicatedRpcServer,
  testBinaries,
  type Scratch
} from './fixtures/llama.ts'

/** A second model, different in shape and weights, so that mixing the two up shows in the tokens. */
const LONG = 48
/** The quota of a pool whose model does not fit: 4 MiB. */
const SMALL = 4 * 1024 * 1024

interface Expected {
  readonly short: ReadonlyMap<string, readonly number[]>
  readonly long: readonly number[]
}

/** The tokens each model gives on a dedicated rpc-server: what the shared one must match. */
function dedicatedTokens(bins: LlamaBinaries, model: string): Promise<Expected> {
  return onDedicatedRpcServer(bins, model, async (url) => {
    const short = new Map<string, readonly number[]>()
    for (const prompt of PROMPTS) short.set(prompt, (await greedyCompletion(url, prompt)).tokens)
    const long = (await greedyCompletion(url, PROMPTS[0] as string, LONG)).tokens
    return { short, long }
  })
}

const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(n)
  return b
}

async function waitFor(what: string, condition: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe('two pools through one multiplexed rpc-server', { timeout: 300_000 }, () => {
  const logger = silentLogger()
  let bins: LlamaBinaries
  let scratch: Scratch
  let models: [string, string]
  let expected: [Expected, Expected]
  let rpc: RpcServer
  let mux: RpcMux
  /** One local port per pool: a pool's llama-server dials its own. */
  let listeners: Record<'a' | 'b' | 'hostile' | 'small', MuxListener>
  let servers: [LlamaServer, LlamaServer]

  before(async () => {
    bins = await testBinaries()
    scratch = await createScratch('rpc-mux')
    models = [await scratch.model(TINY_MODEL), await scratch.model(OTHER_MODEL)]
    expected = [await dedicatedTokens(bins, models[0]), await dedicatedTokens(bins, models[1])]
    rpc = await startRpcServer({ binary: bins.rpcServer, logger })
    mux = await startRpcMux({
      upstreamPort: rpc.port,
      logger,
      quota: (pool) => (pool === 'small' ? SMALL : undefined)
    })
    const listen = (pool: string, weight?: number): Promise<MuxListener> =>
      listenRpcMux(mux, { pool, weight })
    listeners = {
      a: await listen('a', 2),
      b: await listen('b'),
      hostile: await listen('hostile'),
      small: await listen('small')
    }
    servers = await Promise.all([
      startLlamaServer({ binary: bins.llamaServer, model: models[0], logger, rpc: [listeners.a.endpoint] }),
      startLlamaServer({ binary: bins.llamaServer, model: models[1], logger, rpc: [listeners.b.endpoint] })
    ])
  })

  after(async () => {
    await Promise.all(servers.map((s) => s.stop()))
    await Promise.all(Object.values(listeners).map((l) => l.close()))
    mux.close()
    await rpc.stop()
    await scratch.remove()
  })

  it('gives each pool exactly the tokens of a dedicated rpc-server, both at once', async () => {
    assert.notDeepEqual(expected[0].short, expected[1].short, 'the two models differ')
    for (const prompt of PROMPTS) {
      const both = await Promise.all(servers.map((s) => greedyCompletion(s.url, prompt)))
      both.forEach((got, i) =>
        assert.deepEqual(got.tokens, expected[i]?.short.get(prompt), `pool ${i}: "${prompt}"`)
      )
    }
  })

  it('keeps both models resident: many alternating requests, no reload', async () => {
    const loaded = (): ReturnType<RpcMux['sessions']> => mux.sessions().filter((s) => s.buffers.length > 0)
    const before = loaded()
    assert.deepEqual(before.map((s) => s.pool).sort(), ['a', 'b'], 'one loaded session per pool')
    const held = before.reduce((sum, s) => sum + s.heldBytes, 0)
    const modelBytes = models.map((m) => statSync(m).size)
    for (const [i, pool] of ['a', 'b'].entries()) {
      const holds = mux.pools().find((p) => p.pool === pool)?.heldBytes ?? 0
      assert.ok(holds > (modelBytes[i] ?? 0) * 0.9, `pool ${pool} holds its model (${modelBytes[i]} bytes)`)
    }
    const rss = residentBytes(rpc.process.pid)
    assert.ok(rss !== undefined && rss > held, `rpc-server RSS ${rss} covers both sessions' ${held} bytes`)
    for (let round = 0; round < 8; round++) {
      const i = round % 2
      const prompt = PROMPTS[round % PROMPTS.length] as string
      const got = await greedyCompletion((servers[i] as LlamaServer).url, prompt)
      assert.deepEqual(got.tokens, expected[i]?.short.get(prompt), `round ${round}, pool ${i}`)
    }
    const after = loaded()
    assert.deepEqual(
      after.map((s) => s.id),
      before.map((s) => s.id),
      'the same sessions'
    )
    assert.deepEqual(
      after.map((s) => s.buffers.map((b) => b.ptr)),
      before.map((s) => s.buffers.map((b) => b.ptr)),
      'the same buffers'
    )
    const total = (list: typeof before): number => list.reduce((sum, s) => sum + s.uploadBytes, 0)
    const uploaded = total(after) - total(before)
    assert.ok(
      uploaded < Math.min(...modelBytes) / 4,
      `only inputs were uploaded (${uploaded} bytes), no weights`
    )
    assert.ok(mux.stats().graphRestores > 0, 'graphs were restored')
  })

  it("measures each pool's rpc-server compute time, and only the pool that works is charged", async () => {
    const weights = Object.fromEntries(mux.pools().map((p) => [p.pool, p.weight]))
    assert.deepEqual([weights.a, weights.b], [2, 1], 'the weights the pools registered with')
    const before = mux.stats().computeMs
    assert.ok((before.a ?? 0) > 0 && (before.b ?? 0) > 0, `both pools computed: ${JSON.stringify(before)}`)
    await greedyCompletion(servers[1].url, PROMPTS[0] as string, LONG)
    const after = mux.stats().computeMs
    assert.equal(after.a, before.a, 'the idle pool a was charged nothing')
    assert.ok((after.b ?? 0) > (before.b ?? 0), 'pool b was charged for its tokens')
    const b = mux.pools().find((p) => p.pool === 'b')
    assert.equal(b?.computeMs, after.b, 'pools() and stats() agree')
  })

  it('drops a hostile session alone; the pools go on and rpc-server keeps running', async () => {
    const victim = mux.sessions().find((s) => s.pool === 'a' && s.buffers.length > 0)?.buffers[0]
    assert.ok(victim !== undefined)
    const probe = await RawSession.open(listeners.hostile.port)
    const probeBuffer = await withRealBuffer(probe)
    assert.ok(probeBuffer !== undefined, 'an honest raw session gets a buffer')
    probe.write(
      encodeRequest(
        RpcCommand.GetTensor,
        Buffer.concat([f32(probeBuffer.ptr, probeBuffer.base), u64(0n), u64(64n)])
      )
    )
    assert.deepEqual((await probe.read(8 + 64))?.subarray(8), Buffer.alloc(64), 'a new buffer reads as zeros')
    probe.destroy()
    const seed = seedFromEnv()
    const shapesFor = (own: RealBuffer): Array<[string, Buffer]> => [
      ...crossPoolAttacks(victim, own),
      ...vulnerabilityShapes(own, new Random(seed))
    ]
    const count = shapesFor(probeBuffer).length
    for (let k = 0; k < count; k++) {
      const hostile = await RawSession.open(listeners.hostile.port)
      const own = await withRealBuffer(hostile)
      assert.ok(own !== undefined, `attack ${k}: the session opened`)
      const [name, attack] = shapesFor(own)[k] as [string, Buffer]
      hostile.write(attack)
      if (name === 'ALLOC_BUFFER of 2^64-1 bytes') {
        const reply = await hostile.read(8 + 16)
        assert.equal(reply?.readBigUInt64LE(8), 0n, `${name}: refused by rpc-server, session kept`)
        hostile.destroy()
        continue
      }
      assert.ok(await hostile.closedWithin(5_000), `${name}: the hostile session was dropped (seed ${seed})`)
      assert.equal(await hostile.read(1, 100), undefined, `${name}: nothing came back`)
      assert.ok(rpc.process.running, `${name}: rpc-server still runs`)
    }
    await waitFor('hostile buffers freed', () => !mux.pools().some((p) => p.pool === 'hostile'))
    for (const [i, server] of servers.entries()) {
      const got = await greedyCompletion(server.url, PROMPTS[1] as string)
      assert.deepEqual(got.tokens, expected[i]?.short.get(PROMPTS[1] as string), `pool ${i} still correct`)
    }
    assert.ok(mux.stats().dropped >= count - 1, `${mux.stats().dropped} hostile sessions dropped`)
    const session = await RawSession.open(listeners.hostile.port)
    session.write(HELLO)
    assert.ok((await session.read(8 + 28)) !== undefined, 'the multiplexer still takes sessions')
    session.destroy()
  })

  it('refuses a pool the memory past its quota; its model cannot load, the others go on', async () => {
    await assert.rejects(
      startLlamaServer({
        binary: bins.llamaServer,
        model: models[1],
        logger,
        rpc: [listeners.small.endpoint]
      }),
      'a model larger than the quota does not load'
    )
    assert.ok(mux.stats().refusedAllocs > 0, 'because its allocations were refused')
    await waitFor('the small pool gone', () => !mux.pools().some((p) => p.pool === 'small'))
    for (const [i, server] of servers.entries()) {
      const got = await greedyCompletion(server.url, PROMPTS[2] as string)
      assert.deepEqual(got.tokens, expected[i]?.short.get(PROMPTS[2] as string), `pool ${i} unaffected`)
    }
  })

  it("frees a SIGKILLed pool's memory while the other pool generates correctly", async () => {
    const doomed = mux.sessions().find((s) => s.pool === 'a' && s.buffers.length > 0)
    assert.ok(doomed !== undefined)
    const rssBefore = residentBytes(rpc.process.pid) ?? 0
    const other = greedyCompletion(servers[1].url, PROMPTS[0] as string, LONG)
    void greedyCompletion(servers[0].url, PROMPTS[0] as string, LONG).catch(() => undefined)
    const commands = (): number => mux.sessions().find((s) => s.id === doomed.id)?.commands ?? 0
    const start = commands()
    await waitFor('pool 0 generating', () => commands() > start + 50)
    await servers[0].process.kill()
    assert.deepEqual((await other).tokens, expected[1].long, 'pool 1 generated its own tokens throughout')
    await waitFor('the killed pool gone', () => !mux.pools().some((p) => p.pool === 'a'))
    await waitFor(
      'rpc-server memory released',
      () => (residentBytes(rpc.process.pid) ?? rssBefore) < rssBefore - doomed.heldBytes / 2
    )
    assert.ok(rpc.process.running)
  })
})
