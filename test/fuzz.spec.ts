import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import {
  TINY_MODEL,
  connectRpc,
  residentBytes,
  silentLogger,
  type LlamaBinaries
} from '@frankenstein-mesh/llama'
import {
  acquireLease,
  createMeshNode,
  createRevocations,
  ephemeralPrivateKey,
  loadOrCreateIdentity,
  messageChannel,
  multiaddr,
  peerIdFromString,
  type MeshNode
} from '@frankenstein-mesh/mesh'
import {
  AdvertRequest,
  MAX_ADVERT_BYTES,
  MAX_LEASE_MESSAGE_BYTES,
  PROTOCOL,
  type WorkerAdvert
} from '@frankenstein-mesh/protocol'
import { startRpcTunnel } from '@frankenstein-mesh/tunnel'
import {
  spawnAgent,
  loopbackServeArgs,
  spawnOrchestrator,
  type AgentProcess,
  type OrchestratorProcess,
  loopbackJoinArgs
} from './fixtures/agent-process.ts'
import {
  HELLO,
  Random,
  RawSession,
  fuzzBounds,
  honestOpening,
  randomJson,
  seedFromEnv,
  vulnerabilityShapes,
  withRealBuffer
} from './fixtures/fuzz.ts'
import { createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'

/*
 * Hostile input through the real agent and orchestrator, bounded in count and time (raise them
 * with FM_FUZZ_INPUTS / FM_FUZZ_SECONDS; replay a run with the FM_FUZZ_SEED it printed). Each
 * part ends by checking that an honest client is still served and that memory did not run away.
 */

const run = promisify(execFile)
const ORCH = join(import.meta.dirname, '..', 'apps', 'mesh-orch', 'src', 'bin.ts')
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
const POOL = 'fuzz'
const MiB = 1024 * 1024
/** Memory a process may gain over a fuzz run: far above honest churn, far below a leak per input. */
const RSS_ALLOWANCE = 160 * MiB

const seed = seedFromEnv()
const random = new Random(seed)

/** A varint length prefix and the bytes: the framing of every control protocol. */
function lengthPrefixed(bytes: Uint8Array): Buffer {
  const prefix: number[] = []
  let n = bytes.length
  while (n >= 0x80) {
    prefix.push((n & 0x7f) | 0x80)
    n = Math.floor(n / 128)
  }
  prefix.push(n)
  return Buffer.concat([Buffer.from(prefix), bytes])
}

/** Runs `input` until the count or the time bound, whichever comes first; returns how many ran. */
async function fuzzLoop(bounds: { inputs: number; ms: number }, input: (i: number) => Promise<void>) {
  const deadline = Date.now() + bounds.ms
  let i = 0
  while (i < bounds.inputs && Date.now() < deadline) await input(i++)
  return i
}

interface AgentStatus {
  rpcServer: { pid?: number; state: string; restarts: number }
}

describe('fuzz: hostile input through the agent and the orchestrator', { timeout: 600_000 }, () => {
  let bins: LlamaBinaries
  let scratch: Scratch
  let agent: AgentProcess
  let honest: MeshNode
  let honestCredential: string
  const nodes: MeshNode[] = []
  const processes: Array<AgentProcess | OrchestratorProcess> = []
  const identity = () => join(scratch.dir, 'orch.key')
  const agentStatus = async (): Promise<AgentStatus> =>
    JSON.parse(
      (await run(process.execPath, [AGENT, 'status', '--identity', join(scratch.dir, 'agent.key'), '--json']))
        .stdout
    ) as AgentStatus
  const newNode = async (): Promise<MeshNode> => {
    const node = await createMeshNode({
      privateKey: await ephemeralPrivateKey(),
      listen: ['/ip4/127.0.0.1/tcp/0']
    })
    nodes.push(node)
    return node
  }

  before(async () => {
    bins = await testBinaries()
    scratch = await createScratch('fuzz')
    const invite = await run(process.execPath, [
      ORCH,
      'pool',
      'invite',
      '--pool',
      POOL,
      '--identity',
      identity()
    ])
    agent = await spawnAgent(
      [
        '--pool',
        invite.stdout.trim(),
        ...loopbackJoinArgs({ identity: join(scratch.dir, 'agent.key'), rpcServer: bins.rpcServer })
      ],
      { trustOnFirstUse: false }
    )
    processes.push(agent)
    honest = await newNode()
    await honest.dial(multiaddr(agent.addresses[0] ?? ''))
    const authorized = await run(process.execPath, [
      ORCH,
      'pool',
      'authorize',
      '--pool',
      POOL,
      '--identity',
      identity(),
      '--peer',
      honest.peerId.toString()
    ])
    honestCredential = authorized.stdout.trim()
  })
  after(async () => {
    for (const node of nodes) await node.stop()
    await Promise.all(processes.map((p) => p.stop()))
    await scratch.remove()
  })

  it('RPC frames from a leased orchestrator: published vulnerability shapes, mutations, noise', async (t) => {
    const lease = await acquireLease({
      node: honest,
      peer: peerIdFromString(agent.peerId),
      pool: POOL,
      credential: honestCredential,
      logger: silentLogger()
    })
    const tunnel = await startRpcTunnel({
      node: honest,
      peer: peerIdFromString(agent.peerId),
      logger: silentLogger()
    })
    const agentRss = residentBytes(agent.child.pid)
    const before = await agentStatus()
    const outcomes = new Map<string, number>()
    const count = (what: string) => outcomes.set(what, (outcomes.get(what) ?? 0) + 1)
    try {
      const inputs = await fuzzLoop(fuzzBounds(300, 60), async (i) => {
        const session = await RawSession.open(tunnel.port)
        try {
          const kind = i % 3
          if (kind === 0) {
            // A vulnerability shape against a real buffer, as is or mutated.
            const buffer = await withRealBuffer(session)
            if (buffer === undefined) {
              count('no buffer')
              return
            }
            const [, bytes] = random.pick(vulnerabilityShapes(buffer, random))
            session.write(random.next() < 0.5 ? bytes : random.mutate(bytes))
          } else if (kind === 1) {
            session.write(random.mutate(honestOpening()))
          } else {
            session.write(
              Buffer.concat([random.next() < 0.5 ? HELLO : Buffer.alloc(0), random.bytes(random.int(2048))])
            )
          }
          count((await session.closedWithin(300)) ? 'cut off' : 'still open')
        } finally {
          session.destroy()
        }
      })
      t.diagnostic(
        `RPC fuzz (seed ${seed}): ${inputs} inputs, ${JSON.stringify(Object.fromEntries(outcomes))}`
      )
      assert.ok(inputs > 0)

      // The next honest session is served, through the same tunnel, once rpc-server is up (an
      // orchestrator hears "rpc-server restored" on its lease when it had to be restarted).
      await new Promise((r) => setTimeout(r, 1_000))
      await waitFor(async () => (await agentStatus()).rpcServer.state === 'up', 30_000)
      const client = await connectRpc({ port: tunnel.port, timeoutMs: 10_000 })
      assert.equal(await client.deviceCount(), 1)
      client.close()
    } finally {
      await tunnel.close()
      await lease.release()
    }
    const afterwards = await agentStatus()
    assert.equal(agent.child.exitCode, null, 'the agent is alive')
    assert.equal(afterwards.rpcServer.state, 'up')
    // rpc-server aborts (GGML_ASSERT) on tensor data outside its buffer and on ops it does not know:
    // a leased client can make it restart, by its design. A memory fault would be another matter.
    const losses = agent.logs.filter((line) => line.includes('rpc-server lost'))
    t.diagnostic(
      `rpc-server restarts during the RPC fuzz: ${afterwards.rpcServer.restarts - before.rpcServer.restarts}`
    )
    for (const line of losses)
      assert.match(line, /killed by SIGABRT/, 'rpc-server died of an abort, not a fault')
    const grown = (residentBytes(agent.child.pid) ?? 0) - (agentRss ?? 0)
    assert.ok(grown < RSS_ALLOWANCE, `agent memory grew by ${Math.round(grown / MiB)} MiB`)
  })

  it('control messages from strangers: lease requests, revocations, advert requests, RPC streams', async (t) => {
    const ownerKey = (await loadOrCreateIdentity(join(scratch.dir, 'pools', `${POOL}.key`))).privateKey
    const agentRss = residentBytes(agent.child.pid)
    let stranger = await newNode()
    const protocols = [PROTOCOL.lease, PROTOCOL.poolUpdate, PROTOCOL.advert, PROTOCOL.rpc]
    const inputs = await fuzzLoop(fuzzBounds(400, 45), async (i) => {
      // A new stranger now and then, so that not every request meets the rate limit.
      if (i % 25 === 24) {
        await stranger.stop()
        stranger = await newNode()
      }
      const protocol = random.pick(protocols)
      let bytes: Buffer
      switch (random.int(5)) {
        case 0:
          bytes = lengthPrefixed(Buffer.from(JSON.stringify(randomJson(random))))
          break
        case 1: {
          const valid = {
            type: 'request',
            version: 1,
            pool: POOL,
            credential: random.mutate(Buffer.from(honestCredential)).toString('latin1')
          }
          bytes = lengthPrefixed(Buffer.from(JSON.stringify(valid)))
          break
        }
        case 2: {
          // Owner-signed lists of serials nobody holds, and mutations of them.
          const revocations = await createRevocations(ownerKey, {
            pool: POOL,
            serials: [1 + random.int(1000)],
            issued: Date.now()
          })
          const text =
            random.next() < 0.3 ? revocations : random.mutate(Buffer.from(revocations)).toString('latin1')
          bytes = lengthPrefixed(
            Buffer.from(JSON.stringify({ type: 'pool-update', version: 1, revocations: text }))
          )
          break
        }
        case 3:
          // A length prefix claiming far more than any message may hold.
          bytes = Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), random.bytes(64)])
          break
        default:
          bytes = random.bytes(random.int(MAX_LEASE_MESSAGE_BYTES * 2))
      }
      await stranger.dial(multiaddr(agent.addresses[0] ?? ''))
      const stream = await stranger
        .dialProtocol(peerIdFromString(agent.peerId), protocol, { signal: AbortSignal.timeout(5_000) })
        .catch(() => undefined)
      if (stream === undefined) return
      const closed = new Promise<void>((resolve) =>
        stream.addEventListener('close', () => resolve(), { once: true })
      )
      try {
        stream.send(bytes)
      } catch {
        // reset already
      }
      await Promise.race([closed, new Promise((r) => setTimeout(r, 300))])
      stream.abort(new Error('fuzz input done'))
    })
    t.diagnostic(`control fuzz (seed ${seed}): ${inputs} inputs`)
    assert.ok(inputs > 0)
    assert.equal(agent.child.exitCode, null, 'the agent is alive')
    // The honest orchestrator still gets its lease.
    const lease = await acquireLease({
      node: honest,
      peer: peerIdFromString(agent.peerId),
      pool: POOL,
      credential: honestCredential,
      logger: silentLogger()
    })
    assert.equal(lease.lease.pool, POOL)
    await lease.release()
    const grown = (residentBytes(agent.child.pid) ?? 0) - (agentRss ?? 0)
    assert.ok(grown < RSS_ALLOWANCE, `agent memory grew by ${Math.round(grown / MiB)} MiB`)
  })

  it('the orchestrator: lying workers (adverts, invites, leases, RPC) and hostile HTTP clients', async (t) => {
    const model = await scratch.model(TINY_MODEL)
    const invite = (
      await run(process.execPath, [ORCH, 'pool', 'invite', '--pool', POOL, '--identity', identity()])
    ).stdout.trim()
    const orch = await spawnOrchestrator(
      [
        ...loopbackServeArgs({
          pool: POOL,
          identity: identity(),
          llamaServer: bins.llamaServer,
          model,
          ctxSize: 512
        }),
        '--queue-timeout',
        '5'
      ],
      { admission: 'invite' }
    )
    processes.push(orch)
    await waitFor(
      async () => (await fetch(`${orch.url}/health`).catch(() => undefined))?.status === 200,
      90_000
    )
    const orchRss = residentBytes(orch.child.pid)

    // Lying workers: each answers adverts with a mutation of a plausible one (some carry the real
    // invite, so they are admitted and then leased), and answers leases and RPC with noise.
    const liar = async (): Promise<MeshNode> => {
      const node = await newNode()
      const advert: WorkerAdvert = {
        type: 'advert',
        version: 1,
        pools: [POOL],
        memory: { offered: 64 * 1024 * MiB, free: 64 * 1024 * MiB },
        accelerator: 'cpu',
        rpcProtocol: '6.0.0',
        lease: { state: 'idle' },
        at: Date.now(),
        membership: { invite }
      }
      await node.handle(PROTOCOL.advert, async (stream) => {
        await messageChannel(stream, AdvertRequest, MAX_ADVERT_BYTES)
          .receive(AbortSignal.timeout(2_000))
          .catch(() => {})
        const text = JSON.stringify(
          random.next() < 0.3 ? advert : random.next() < 0.5 ? randomJson(random) : advert
        )
        stream.send(
          lengthPrefixed(random.next() < 0.4 ? Buffer.from(text) : random.mutate(Buffer.from(text)))
        )
        await stream.close().catch(() => {})
      })
      for (const protocol of [PROTOCOL.lease, PROTOCOL.rpc])
        await node.handle(protocol, (stream) => {
          stream.send(
            random.next() < 0.5
              ? random.bytes(random.int(512))
              : lengthPrefixed(Buffer.from(JSON.stringify(randomJson(random))))
          )
          setTimeout(() => stream.abort(new Error('liar done')), 200)
        })
      return node
    }
    const liars = await Promise.all([liar(), liar(), liar()])
    const workerInputs = await fuzzLoop(fuzzBounds(150, 30), async (i) => {
      const node = liars[i % liars.length]
      if (node === undefined) return
      await node.dial(multiaddr(orch.addresses[0] ?? '')).catch(() => {})
      await new Promise((r) => setTimeout(r, 250))
      await node.hangUp(peerIdFromString(orch.peerId)).catch(() => {})
    })

    // Hostile HTTP clients of the OpenAI front.
    const paths = [
      '/v1/completions',
      '/v1/chat/completions',
      '/completion',
      '/v1/models',
      '/health',
      '/%2e%2e/etc',
      '/v1/completions?' + 'a'.repeat(9000)
    ]
    const httpInputs = await fuzzLoop(fuzzBounds(150, 30), async () => {
      const honestBody = { prompt: 'fuzz', max_tokens: 2, temperature: 0 }
      const body = random.pick([
        () => JSON.stringify(randomJson(random)),
        () => random.mutate(Buffer.from(JSON.stringify(honestBody))).toString('latin1'),
        () =>
          JSON.stringify({
            ...honestBody,
            max_tokens: random.pick([-1, 0, 2 ** 31, 'x', null]),
            stream: random.next() < 0.5
          }),
        () => JSON.stringify({ prompt: 'x'.repeat(100_000), max_tokens: 1 }),
        () => '['.repeat(100_000),
        () => random.bytes(random.int(4096)).toString('latin1')
      ])()
      const method = random.next() < 0.8 ? random.pick(['POST', 'PUT']) : random.pick(['GET', 'DELETE'])
      const response = await fetch(`${orch.url}${random.pick(paths)}`, {
        method,
        headers: {
          'content-type': random.pick(['application/json', 'text/plain', 'application/x-www-form-urlencoded'])
        },
        ...(method === 'POST' || method === 'PUT' ? { body } : {}),
        signal: AbortSignal.timeout(3_000)
      }).catch(() => undefined)
      await response?.body?.cancel().catch(() => {})
    })
    t.diagnostic(
      `orchestrator fuzz (seed ${seed}): ${workerInputs} lying-worker contacts, ${httpInputs} HTTP requests`
    )
    for (const node of liars) await node.stop()

    assert.equal(orch.child.exitCode, null, 'the orchestrator is alive')
    // The pool still serves an honest client, on the honest worker.
    await waitFor(
      async () => (await fetch(`${orch.url}/health`).catch(() => undefined))?.status === 200,
      90_000
    )
    const completion = await greedyCompletion(orch.url, 'The mesh of many machines', 4)
    assert.ok(completion.tokens.length > 0)
    const grown = (residentBytes(orch.child.pid) ?? 0) - (orchRss ?? 0)
    assert.ok(grown < RSS_ALLOWANCE, `orchestrator memory grew by ${Math.round(grown / MiB)} MiB`)
  })
})

async function waitFor(check: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`not so within ${ms} ms`)
}
