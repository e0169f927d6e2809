import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { TINY_MODEL, type LlamaBinaries } from '@frankenstein-mesh/llama'
import {
  spawnAgent,
  loopbackServeArgs,
  spawnOrchestrator,
  waitHealthy,
  type AgentProcess,
  type OrchestratorProcess,
  loopbackJoinArgs
} from './fixtures/agent-process.ts'
import { PROMPTS, createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'

const run = promisify(execFile)
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
const ORCH = join(import.meta.dirname, '..', 'apps', 'mesh-orch', 'src', 'bin.ts')
const POOL = 'credits'

interface SignedReceipt {
  text: string
  workerSignature: string
  orchestratorSignature: string
}
interface Report {
  balances: Array<{ worker: string; pool: string; credit: number; receipts: number }>
  receipts: SignedReceipt[]
}

describe(
  'credits: a worker serves a pool and both ledgers hold the same doubly-signed receipts',
  { timeout: 300_000 },
  () => {
    let bins: LlamaBinaries
    let scratch: Scratch
    let model: string
    let agent: AgentProcess
    const processes: Array<AgentProcess | OrchestratorProcess> = []
    const orchKey = () => join(scratch.dir, 'orch.key')
    const agentKey = () => join(scratch.dir, 'agent.key')
    const report = async (cli: string, identity: string, ledger?: string): Promise<Report> =>
      JSON.parse(
        (
          await run(process.execPath, [
            cli,
            'credits',
            '--json',
            ...(ledger === undefined ? ['--identity', identity] : ['--ledger', ledger])
          ])
        ).stdout
      ) as Report
    const verify = async (cli: string, args: string[]): Promise<{ code: number; stdout: string }> => {
      try {
        return { code: 0, stdout: (await run(process.execPath, [cli, 'credits', 'verify', ...args])).stdout }
      } catch (err) {
        const e = err as { code?: number; stdout?: string }
        return { code: e.code ?? -1, stdout: e.stdout ?? '' }
      }
    }
    const orchestrator = async (): Promise<OrchestratorProcess> => {
      const orch = await spawnOrchestrator(
        loopbackServeArgs({ pool: POOL, identity: orchKey(), llamaServer: bins.llamaServer, model }),
        { admission: 'invite' }
      )
      processes.push(orch)
      await waitHealthy(orch.url)
      return orch
    }

    before(async () => {
      bins = await testBinaries()
      scratch = await createScratch('credits')
      model = await scratch.model(TINY_MODEL)
      const invite = (
        await run(process.execPath, [ORCH, 'pool', 'invite', '--pool', POOL, '--identity', orchKey()])
      ).stdout.trim()
      agent = await spawnAgent(
        [
          '--pool',
          invite,
          ...loopbackJoinArgs({ identity: agentKey(), rpcServer: bins.rpcServer }),
          '--receipt-interval',
          '1'
        ],
        { trustOnFirstUse: false }
      )
      processes.push(agent)
    })
    after(async () => {
      await Promise.all(processes.map((p) => p.stop()))
      await scratch.remove()
    })

    it('records matching receipts on both sides, periodic and final, and both ledgers verify', async () => {
      const orch = await orchestrator()
      for (const prompt of PROMPTS) assert.ok((await greedyCompletion(orch.url, prompt, 8)).tokens.length > 0)
      await new Promise((r) => setTimeout(r, 2_500))
      // Stopping releases the lease: the last period's receipt is exchanged before the lease ends.
      assert.equal(await orch.stop(), 0)

      const theirs = await report(ORCH, orchKey())
      const ours = await report(AGENT, agentKey())
      assert.ok(ours.receipts.length >= 2, `${ours.receipts.length} receipts`)
      assert.deepEqual(
        ours.receipts.map((r) => r.text),
        theirs.receipts.map((r) => r.text)
      )
      assert.deepEqual(ours.receipts, theirs.receipts, 'the same signatures on both sides')
      const texts = ours.receipts.map(
        (r) => JSON.parse(r.text) as { worker: string; seq: number; credit: number }
      )
      assert.ok(texts.every((t) => t.worker === agent.peerId))
      assert.ok(texts.every((t) => t.credit > 0))
      assert.deepEqual(
        texts.map((t) => t.seq),
        texts.map((_, i) => i),
        'periods 0, 1, 2... of one lease'
      )
      const status = JSON.parse(
        (await run(process.execPath, [AGENT, 'status', '--identity', agentKey(), '--json'])).stdout
      ) as { credits: { recorded: number; disputes: number } }
      assert.deepEqual(status.credits.disputes, 0, 'no receipt was disputed')
      assert.equal(status.credits.recorded, ours.receipts.length)
      const [balance] = ours.balances
      assert.ok(balance !== undefined)
      assert.equal(balance.pool, POOL)
      assert.ok(balance.credit > 0)

      for (const [cli, key] of [
        [AGENT, agentKey()],
        [ORCH, orchKey()]
      ] as const) {
        const result = await verify(cli, ['--identity', key])
        assert.equal(result.code, 0, result.stdout)
        assert.match(result.stdout, new RegExp(`${ours.receipts.length} entries`))
      }
    })

    it('fails verification of an edited ledger, naming the entry', async () => {
      const copy = join(scratch.dir, 'edited.sqlite')
      await copyFile(`${orchKey()}.ledger.sqlite`, copy)
      const raw = new DatabaseSync(copy)
      raw.exec('DROP TRIGGER entries_no_update')
      raw.exec(
        `UPDATE entries SET body = replace(body, '"pool":"credits"', '"pool":"credit$"') WHERE seq = 2`
      )
      raw.close()
      const result = await verify(ORCH, ['--ledger', copy])
      assert.equal(result.code, 1)
      assert.match(result.stdout, /entry 2 is bad/)
    })

    it('loses no acknowledged receipt and records no half one when the orchestrator is killed -9 mid-exchange', async () => {
      const before = (await report(AGENT, agentKey())).receipts.length
      const orch = await orchestrator()
      await greedyCompletion(orch.url, PROMPTS[0] ?? 'x', 8)
      // Receipts go every second: wait for one more to be recorded, then kill in the middle of the next.
      const deadline = Date.now() + 30_000
      while ((await report(AGENT, agentKey())).receipts.length <= before && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 200))
      await new Promise((r) => setTimeout(r, 700))
      await orch.stop('SIGKILL')
      await new Promise((r) => setTimeout(r, 1_500))

      const ours = await report(AGENT, agentKey())
      const theirs = await report(ORCH, orchKey())
      assert.ok(ours.receipts.length > before, 'receipts were acknowledged before the kill')
      const recorded = new Set(theirs.receipts.map((r) => r.text))
      for (const receipt of ours.receipts)
        assert.ok(
          recorded.has(receipt.text),
          'every receipt the worker holds, the orchestrator recorded first'
        )
      for (const [cli, key] of [
        [AGENT, agentKey()],
        [ORCH, orchKey()]
      ] as const) {
        const result = await verify(cli, ['--identity', key])
        assert.equal(result.code, 0, result.stdout)
      }
    })
    it('serves a contributor’s API key before an anonymous client when requests queue, and charges it', async () => {
      const key = (
        await run(process.execPath, [AGENT, 'credits', 'key', '--pool', POOL, '--identity', agentKey()])
      ).stdout.trim()
      const orch = await orchestrator() // one generation slot (--parallel 1)
      const complete = async (apiKey: string | undefined, tokens: number): Promise<number> => {
        const res = await fetch(`${orch.url}/v1/completions`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            ...(apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` })
          },
          body: JSON.stringify({ prompt: 'queue', max_tokens: tokens, temperature: 0, ignore_eos: true })
        })
        const text = await res.text()
        assert.equal(res.status, 200, text)
        return performance.now()
      }
      const bad = await fetch(`${orch.url}/v1/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer fmk_not-a-key' },
        body: '{}'
      })
      assert.equal(bad.status, 401)
      await bad.body?.cancel()

      const long = complete(undefined, 200) // holds the slot
      await new Promise((r) => setTimeout(r, 300))
      const anonymous = complete(undefined, 4) // waits first...
      await new Promise((r) => setTimeout(r, 200))
      const contributor = complete(key, 4) // ...but goes first
      const [, anonymousAt, contributorAt] = await Promise.all([long, anonymous, contributor])
      assert.ok(contributorAt < anonymousAt, 'the key holder was served before the anonymous client')

      const theirs = await report(ORCH, orchKey())
      const earned = theirs.receipts
        .map((r) => JSON.parse(r.text) as { worker: string; credit: number })
        .filter((r) => r.worker === agent.peerId)
        .reduce((sum, r) => sum + r.credit, 0)
      const balance = theirs.balances.find((b) => b.worker === agent.peerId)
      assert.ok(balance !== undefined)
      assert.ok(balance.credit < earned - 1e-9, `charged: ${earned} earned, ${balance.credit} left`)
      const verified = await verify(ORCH, ['--identity', orchKey()])
      assert.equal(verified.code, 0, verified.stdout)
    })
  }
)
