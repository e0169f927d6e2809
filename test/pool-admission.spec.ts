import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { TINY_MODEL, connectRpc, silentLogger } from '@frankenstein-mesh/llama'
import {
  LeaseRefusedError,
  acquireLease,
  createCredential,
  createInvite,
  createMeshNode,
  createRevocations,
  ephemeralPrivateKey,
  multiaddr,
  peerIdFromString,
  request,
  type MeshNode
} from '@frankenstein-mesh/mesh'
import {
  MAX_POOL_UPDATE_BYTES,
  PROTOCOL,
  PoolUpdateAck,
  type RefusalReason
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
import { createScratch, testBinaries, type Scratch } from './fixtures/llama.ts'

const run = promisify(execFile)
const ORCH = join(import.meta.dirname, '..', 'apps', 'mesh-orch', 'src', 'bin.ts')
const HOUR = 3_600_000
type PrivateKey = Awaited<ReturnType<typeof ephemeralPrivateKey>>

let serials = 1
async function credential(
  owner: PrivateKey,
  pool: string,
  subject: MeshNode,
  times: { issued?: number; expires?: number } = {}
): Promise<{ text: string; serial: number }> {
  const serial = serials++
  const issued = times.issued ?? Date.now()
  const text = await createCredential(owner, {
    pool,
    subject: subject.peerId.toString(),
    serial,
    issued,
    expires: times.expires ?? issued + HOUR
  })
  return { text, serial }
}

const invite = async (owner: PrivateKey, pool: string): Promise<string> =>
  await createInvite(owner, { pool, bootstrap: [], expires: Date.now() + HOUR, admission: 'invite' })

describe(
  'pool admission at the agent: only the owner’s orchestrators get a lease',
  { timeout: 180_000 },
  () => {
    let scratch: Scratch
    let agent: AgentProcess
    let alphaOwner: PrivateKey
    let betaOwner: PrivateKey
    const nodes: MeshNode[] = []
    let lastDial = 0

    /** A fresh peer (so refusals of one test do not rate-limit another), connected to the agent. */
    const orchestrator = async (): Promise<MeshNode> => {
      // libp2p takes at most 5 new connections a second from one host, and all of ours are 127.0.0.1.
      await new Promise((r) => setTimeout(r, Math.max(0, lastDial + 250 - Date.now())))
      lastDial = Date.now()
      const node = await createMeshNode({
        privateKey: await ephemeralPrivateKey(),
        listen: ['/ip4/127.0.0.1/tcp/0']
      })
      nodes.push(node)
      await node.dial(multiaddr(agent.addresses[0] ?? ''))
      return node
    }
    const lease = (node: MeshNode, pool: string, text: string | undefined) =>
      acquireLease({
        node,
        peer: peerIdFromString(agent.peerId),
        pool,
        credential: text,
        logger: silentLogger(),
        signal: AbortSignal.timeout(10_000)
      })
    const refusal = async (
      node: MeshNode,
      pool: string,
      text: string | undefined
    ): Promise<RefusalReason> => {
      try {
        const granted = await lease(node, pool, text)
        await granted.release()
      } catch (err) {
        if (err instanceof LeaseRefusedError) return err.reason
        throw err
      }
      assert.fail(`a lease on ${pool} was granted`)
    }
    const revoke = async (owner: PrivateKey, pool: string, revoked: number[]): Promise<void> => {
      const relay = await orchestrator()
      const revocations = await createRevocations(owner, { pool, serials: revoked, issued: Date.now() })
      await request(
        relay,
        peerIdFromString(agent.peerId),
        PROTOCOL.poolUpdate,
        { type: 'pool-update', version: 1, revocations },
        PoolUpdateAck,
        { maxBytes: MAX_POOL_UPDATE_BYTES, timeoutMs: 5_000 }
      )
    }

    before(async () => {
      const bins = await testBinaries()
      scratch = await createScratch('admission')
      alphaOwner = await ephemeralPrivateKey()
      betaOwner = await ephemeralPrivateKey()
      agent = await spawnAgent(
        [
          '--pool',
          await invite(alphaOwner, 'alpha'),
          '--pool',
          await invite(betaOwner, 'beta'),
          ...loopbackJoinArgs({
            identity: join(scratch.dir, 'agent.key'),
            rpcServer: bins.rpcServer,
            mdns: false
          })
        ],
        { trustOnFirstUse: false }
      )
    })
    after(async () => {
      for (const node of nodes) await node.stop()
      await agent.stop()
      await scratch.remove()
    })

    it('grants a lease to an orchestrator the owner credited', async () => {
      const node = await orchestrator()
      const granted = await lease(node, 'alpha', (await credential(alphaOwner, 'alpha', node)).text)
      assert.equal(granted.lease.pool, 'alpha')
      await granted.release()
    })

    it('refuses an unknown peer, a self-made credential, a borrowed one and an expired one, each with its reason', async () => {
      const stranger = await orchestrator()
      assert.equal(await refusal(stranger, 'alpha', undefined), 'no-credential')
      const forger = await orchestrator()
      assert.equal(
        await refusal(forger, 'alpha', (await credential(await ephemeralPrivateKey(), 'alpha', forger)).text),
        'wrong-owner'
      )
      const borrower = await orchestrator()
      const lender = await orchestrator()
      assert.equal(
        await refusal(borrower, 'alpha', (await credential(alphaOwner, 'alpha', lender)).text),
        'wrong-subject'
      )
      const late = await orchestrator()
      const expired = await credential(alphaOwner, 'alpha', late, {
        issued: Date.now() - 2 * HOUR,
        expires: Date.now() - HOUR
      })
      assert.equal(await refusal(late, 'alpha', expired.text), 'expired')
    })

    it('refuses an orchestrator authorized for another pool, though its own pool lets it in', async () => {
      const node = await orchestrator()
      const betaCredential = (await credential(betaOwner, 'beta', node)).text
      assert.equal(await refusal(node, 'alpha', betaCredential), 'bad-credential')
      assert.equal(await refusal(node, 'gamma', betaCredential), 'unknown-pool')
      const granted = await lease(node, 'beta', betaCredential)
      await granted.release()
    })

    it('ends a revoked orchestrator’s lease and live RPC stream at once, and refuses it afterwards', async () => {
      const node = await orchestrator()
      const held = await credential(alphaOwner, 'alpha', node)
      const granted = await lease(node, 'alpha', held.text)
      const tunnel = await startRpcTunnel({
        node,
        peer: peerIdFromString(agent.peerId),
        logger: silentLogger()
      })
      try {
        const client = await connectRpc({ port: tunnel.port })
        assert.equal(await client.deviceCount(), 1)

        // A revocation list signed by anyone but the owner changes nothing...
        await revoke(await ephemeralPrivateKey(), 'alpha', [held.serial])
        assert.equal(await client.deviceCount(), 1)
        // ...the owner's, relayed by any peer, ends the lease and the stream.
        await revoke(alphaOwner, 'alpha', [held.serial])
        assert.equal(await granted.ended, 'revoked')
        await assert.rejects(client.deviceCount(), { code: 'ERR_RPC_CLOSED' })
        client.close()
      } finally {
        await tunnel.close()
      }
      assert.equal(await refusal(node, 'alpha', held.text), 'revoked')
      // Other credentials of the pool still work.
      const other = await orchestrator()
      const next = await lease(other, 'alpha', (await credential(alphaOwner, 'alpha', other)).text)
      await next.release()
    })

    it('rate-limits a peer that keeps being refused, even once it shows a good credential', async () => {
      const node = await orchestrator()
      const reasons: RefusalReason[] = []
      for (let i = 0; i < 6; i++) reasons.push(await refusal(node, 'alpha', undefined))
      assert.deepEqual(reasons, [...Array<RefusalReason>(5).fill('no-credential'), 'rate-limited'])
      assert.equal(
        await refusal(node, 'alpha', (await credential(alphaOwner, 'alpha', node)).text),
        'rate-limited'
      )
    })
  }
)

describe('joining a pool: by invite, then by name', { timeout: 120_000 }, () => {
  let scratch: Scratch
  let rpcServer: string
  before(async () => {
    rpcServer = (await testBinaries()).rpcServer
    scratch = await createScratch('join')
  })
  after(async () => {
    await scratch.remove()
  })
  const join_ = (pools: string[], trustOnFirstUse = false) =>
    spawnAgent(
      [
        ...pools.flatMap((p) => ['--pool', p]),
        ...loopbackJoinArgs({ identity: join(scratch.dir, 'agent.key'), rpcServer: rpcServer, mdns: false })
      ],
      { trustOnFirstUse, timeoutMs: 30_000 }
    )

  it('refuses a pool name it holds no invite for, and an altered invite, with their codes', async () => {
    await assert.rejects(join_(['delta']), /ERR_NO_INVITE/)
    const text = await invite(await ephemeralPrivateKey(), 'delta')
    const altered = `${text.slice(0, -6)}${text.slice(-6) === 'AAAAAA' ? 'BBBBBB' : 'AAAAAA'}`
    await assert.rejects(join_([altered]), /ERR_BAD_INVITE/)
  })

  it('remembers an invite by its pool name', async () => {
    const first = await join_([await invite(await ephemeralPrivateKey(), 'delta')])
    assert.equal(await first.stop(), 0)
    const again = await join_(['delta'])
    assert.equal(await again.stop(), 0)
  })
})

describe('pool admission at the orchestrator: only invited workers are used', { timeout: 240_000 }, () => {
  let scratch: Scratch
  const processes: Array<AgentProcess | OrchestratorProcess> = []
  after(async () => {
    await Promise.all(processes.map((p) => p.stop()))
    await scratch.remove()
  })

  it('plans with the invited worker only; a worker without invite or with another owner’s is ignored', async () => {
    const bins = await testBinaries()
    scratch = await createScratch('orch-admission')
    const model = await scratch.model(TINY_MODEL)
    const identity = join(scratch.dir, 'orch.key')
    const { stdout } = await run(process.execPath, [
      ORCH,
      'pool',
      'invite',
      '--pool',
      'adm',
      '--identity',
      identity
    ])
    const agentWith = async (name: string, pool: string, trustOnFirstUse = false) => {
      const agent = await spawnAgent(
        [
          '--pool',
          pool,
          '--identity',
          // A folder each: an agent remembers invites beside its identity.
          join(scratch.dir, name, 'agent.key'),
          '--listen',
          '/ip4/127.0.0.1/tcp/0',
          '--rpc-server-bin',
          bins.rpcServer
        ],
        { trustOnFirstUse }
      )
      processes.push(agent)
      return agent
    }
    const invited = await agentWith('invited', stdout.trim())
    const uninvited = await agentWith('uninvited', 'adm', true)
    const foreign = await agentWith('foreign', await invite(await ephemeralPrivateKey(), 'adm'))
    const orch = await spawnOrchestrator(
      loopbackServeArgs({ pool: 'adm', identity, llamaServer: bins.llamaServer, model }),
      { admission: 'invite' }
    )
    processes.push(orch)

    // Both outsiders are met and turned away (mDNS finds all three on loopback)...
    const notAdmitted = (peer: string) =>
      orch.logs.some((line) => line.includes('worker not admitted') && line.includes(peer))
    const deadline = Date.now() + 60_000
    while (!(notAdmitted(uninvited.peerId) && notAdmitted(foreign.peerId)) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200))
    const workerLines = orch.logs.filter((l) => l.includes('worker')).slice(-20)
    assert.ok(
      notAdmitted(uninvited.peerId),
      `the worker without an invite was seen and refused:\n${workerLines.join('\n')}`
    )
    assert.ok(notAdmitted(foreign.peerId), 'the worker with another owner’s invite was seen and refused')

    // ...and the pool serves on the invited one alone.
    let plan: string[] = []
    let workers: Array<{ peer: string }> = []
    while (Date.now() < deadline + 60_000) {
      const status = JSON.parse(
        (await run(process.execPath, [ORCH, 'status', '--identity', identity, '--json'])).stdout
      ) as { state: string; plan: string[]; workers: Array<{ peer: string }> }
      ;({ plan, workers } = status)
      if (status.state === 'serving') break
      await new Promise((r) => setTimeout(r, 500))
    }
    assert.equal(plan.length, 1, `plan: ${plan.join('; ')}`)
    assert.deepEqual(
      workers.map((w) => w.peer),
      [invited.peerId]
    )
  })
})
