import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { TINY_MODEL, type LlamaBinaries } from '@frankenstein-mesh/llama'
import {
  spawnAgent,
  spawnOrchestrator,
  type AgentProcess,
  type OrchestratorProcess,
  loopbackJoinArgs
} from './fixtures/agent-process.ts'
import { createScratch, testBinaries, type Scratch } from './fixtures/llama.ts'

const run = promisify(execFile)
const ORCH = join(import.meta.dirname, '..', 'apps', 'mesh-orch', 'src', 'bin.ts')

interface StreamResult {
  text: string
  events: Array<Record<string, unknown>>
  done: number
}

/** Reads an OpenAI SSE stream; `onEvent` may act after each event (the test kills a worker). */
async function stream(
  url: string,
  body: Record<string, unknown>,
  onEvent?: (n: number) => Promise<void>
): Promise<StreamResult> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true })
  })
  assert.equal(res.status, 200)
  const result: StreamResult = { text: '', events: [], done: 0 }
  let pending = ''
  for await (const bytes of res.body ?? []) {
    pending += Buffer.from(bytes).toString('utf8')
    let end = pending.indexOf('\n\n')
    while (end !== -1) {
      const raw = pending.slice(0, end)
      pending = pending.slice(end + 2)
      end = pending.indexOf('\n\n')
      assert.ok(raw.startsWith('data: '), `an SSE data event: ${raw}`)
      if (raw === 'data: [DONE]') {
        result.done++
        continue
      }
      assert.equal(result.done, 0, 'nothing after [DONE]')
      const event = JSON.parse(raw.slice(6)) as Record<string, unknown>
      result.events.push(event)
      result.text += (event['choices'] as Array<{ text?: string }>)[0]?.text ?? ''
      await onEvent?.(result.events.length)
    }
  }
  assert.equal(pending, '', 'the stream ends on an event boundary')
  return result
}

describe('failover: a worker killed mid-stream', { timeout: 240_000 }, () => {
  let bins: LlamaBinaries
  let scratch: Scratch
  let orch: OrchestratorProcess
  const agents: AgentProcess[] = []
  const request = { prompt: 'The mesh of many machines', max_tokens: 160, temperature: 0 }

  before(async () => {
    bins = await testBinaries()
    scratch = await createScratch('failover')
    const model = await scratch.model(TINY_MODEL)
    for (const name of ['w1', 'w2']) {
      agents.push(
        await spawnAgent([
          '--pool',
          'fo',
          ...loopbackJoinArgs({ identity: join(scratch.dir, `${name}.key`), rpcServer: bins.rpcServer })
        ])
      )
    }
    orch = await spawnOrchestrator([
      '--pool',
      'fo',
      '--model',
      model,
      '--port',
      '0',
      '--identity',
      join(scratch.dir, 'orch.key'),
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--llama-server-bin',
      bins.llamaServer,
      '--ctx-size',
      '2048',
      '--parallel',
      '2',
      '--worker-expiry',
      '3'
    ])
    const deadline = Date.now() + 60_000
    while (
      (await fetch(`${orch.url}/health`)
        .then((r) => r.status)
        .catch(() => 0)) !== 200
    ) {
      if (Date.now() > deadline) throw new Error('the pool never served')
      await new Promise((r) => setTimeout(r, 200))
    }
  })
  after(async () => {
    await orch.stop()
    await Promise.all(agents.map((a) => a.stop()))
    await scratch.remove()
  })

  it('completes the stream, well formed and equal to the uninterrupted output, and serves the next request', async () => {
    const uninterrupted = await stream(orch.url, request)
    assert.equal(uninterrupted.done, 1)

    const { stdout } = await run(process.execPath, [
      ORCH,
      'status',
      '--identity',
      join(scratch.dir, 'orch.key'),
      '--json'
    ])
    const serving = (JSON.parse(stdout) as { plan: string[] }).plan.map((line) => line.split(':')[0])
    const victim = agents.find((a) => serving.includes(a.peerId))
    assert.ok(victim !== undefined, 'one of our agents serves')
    const cut = await stream(orch.url, request, async (n) => {
      if (n === 12) await victim.stop('SIGKILL')
    })
    assert.equal(victim.child.signalCode, 'SIGKILL', 'the worker was killed mid-stream')
    assert.ok(
      orch.logs.some((line) => line.includes('stream cut: resuming it on the next plan')),
      'the front resumed the stream'
    )
    assert.equal(cut.done, 1, 'exactly one [DONE], at the end')
    assert.equal(cut.text, uninterrupted.text)
    const last = cut.events.at(-1) as { choices: Array<{ finish_reason: string | null }> }
    assert.equal(last.choices[0]?.finish_reason, 'length')

    const next = await fetch(`${orch.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...request, max_tokens: 8 })
    })
    assert.equal(next.status, 200)
    const { stdout: after } = await run(process.execPath, [
      ORCH,
      'status',
      '--identity',
      join(scratch.dir, 'orch.key'),
      '--json'
    ])
    assert.ok(!(JSON.parse(after) as { plan: string[] }).plan.some((line) => line.startsWith(victim.peerId)))
  })
})
