import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { TINY_MODEL } from '@frankenstein-mesh/llama'
import { DashboardSnapshot } from '@frankenstein-mesh/mesh-orch'
import {
  loopbackJoinArgs,
  loopbackServeArgs,
  spawnAgent,
  spawnOrchestrator,
  waitHealthy,
  type AgentProcess,
  type OrchestratorProcess
} from './fixtures/agent-process.ts'
import { PROMPTS, createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'

const CHROMIUM = '/usr/bin/chromium'
const SCREENSHOT = join(import.meta.dirname, '..', 'test-results', 'dashboard.png')
const skip = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does, as root) to run the dashboard test`

/** Polls the page until `check` returns a value (not undefined), at most `timeoutMs`. */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const value = await check()
      if (value !== undefined) return value
    } catch (err) {
      last = err
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`)
}

/** The worker rows the page shows: peer id → present or gone. */
async function workerRows(page: Page): Promise<Map<string, string>> {
  const rows = new Map<string, string>()
  for (const row of await page.locator('[data-testid="worker-row"]').all())
    rows.set((await row.getAttribute('data-peer')) ?? '', (await row.getAttribute('data-state')) ?? '')
  return rows
}

const value = async (page: Page, selector: string): Promise<string | null> =>
  await page.locator(selector).first().getAttribute('data-value')

/** One `name{labels} value` of a Prometheus text, or undefined. */
function metric(text: string, name: string, peer?: string): number | undefined {
  const labels = peer === undefined ? '' : `\\{peer="${peer}"\\}`
  const found = new RegExp(`^${name}${labels} (\\S+)$`, 'm').exec(text)
  return found === null ? undefined : Number(found[1])
}

describe('the live dashboard in a real browser', { skip, timeout: 300_000 }, () => {
  let scratch: Scratch | undefined
  let profile: string | undefined
  let orch: OrchestratorProcess
  let browser: BrowserContext | undefined
  let page: Page
  const agents: AgentProcess[] = []
  const processes: Array<AgentProcess | OrchestratorProcess> = []
  const pool = `dash-${process.pid}`
  let rpcServer: string
  let serveArgs: string[]
  let dir: string

  const agent = async (name: string): Promise<AgentProcess> => {
    const started = await spawnAgent([
      ...loopbackJoinArgs({ identity: join(dir, `${name}.key`), rpcServer }),
      '--pool',
      pool,
      // Neither can hold the model and its KV cache alone: the plan takes two.
      '--memory',
      '64MiB',
      // Receipts every second, so that credit is earned while the test looks.
      '--receipt-interval',
      '1'
    ])
    agents.push(started)
    processes.push(started)
    return started
  }

  before(async () => {
    const bins = await testBinaries()
    rpcServer = bins.rpcServer
    scratch = await createScratch('dash')
    dir = scratch.dir
    profile = await mkdtemp(join(tmpdir(), 'fm-dash-chromium-'))
    const model = await scratch.model(TINY_MODEL)
    await Promise.all([agent('w1'), agent('w2')])
    serveArgs = [
      ...loopbackServeArgs({
        pool,
        identity: join(dir, 'orch.key'),
        llamaServer: bins.llamaServer,
        model,
        ctxSize: 2048,
        parallel: 2
      }),
      // A stopped agent leaves the view within seconds.
      '--worker-expiry',
      '3'
    ]
    orch = await spawnOrchestrator(serveArgs)
    processes.push(orch)
    await waitHealthy(orch.url)
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync'
      ]
    })
    page = browser.pages()[0] ?? (await browser.newPage())
  })

  after(async () => {
    await browser?.close()
    await Promise.all(processes.map((p) => p.stop()))
    if (profile !== undefined) await rm(profile, { recursive: true, force: true })
    await scratch?.remove()
  })

  it('opens at / and shows the serving pool, its workers and the plan', async () => {
    const res = await page.goto(`${orch.url}/`)
    assert.equal(res?.status(), 200)
    assert.equal(new URL(page.url()).pathname, '/dashboard')
    await until('the feed to connect', async () =>
      (await page.locator('#connection').textContent()) === 'live' ? true : undefined
    )
    await until('the serving state', async () =>
      (await value(page, '#state')) === 'serving' ? true : undefined
    )
    const rows = await until('both workers', async () => {
      const found = await workerRows(page)
      return agents.every((a) => found.get(a.peerId) === 'present') ? found : undefined
    })
    assert.equal(rows.size, 2)
    assert.equal(await page.locator('[data-testid="link-row"]').count(), 2)
    assert.equal(await page.locator('#plan-bar .seg').count(), 2)
    // Marks this page load: a reload would lose it.
    await page.evaluate("window.loadMark = 'first'")
  })

  it('shows a worker joining without a reload', async () => {
    const third = await agent('w3')
    const rows = await until('the third worker to appear', async () => {
      const found = await workerRows(page)
      return found.get(third.peerId) === 'present' ? found : undefined
    })
    assert.equal(rows.size, 3)
    assert.equal(
      await value(page, `[data-testid="worker-row"][data-peer="${third.peerId}"] [data-field="planIndex"]`),
      null,
      'the plan still uses the first two'
    )
    assert.equal(await page.evaluate<unknown>('window.loadMark'), 'first')
  })

  it("matches the orchestrator's /metrics: workers, plan, tokens, and each tunnel's loaded bytes", async () => {
    let generated = 0
    for (const prompt of PROMPTS) generated += (await greedyCompletion(orch.url, prompt, 16)).tokens.length
    // The page and the scrape read the same status; wait (bounded) for a push after the completions.
    const compared = await until('the page to agree with /metrics', async () => {
      const text = await (await fetch(`${orch.url}/metrics`)).text()
      const peers: string[] = []
      for (const row of await page.locator('[data-testid="link-row"]').all())
        peers.push((await row.getAttribute('data-peer')) ?? '')
      const pairs: Array<[string, number | undefined, string | null]> = [
        ['workers', metric(text, 'fm_orch_workers'), await value(page, '#worker-count')],
        ['plan', metric(text, 'fm_orch_plan_workers'), await value(page, '#plan-count')],
        ['tokens', metric(text, 'fm_orch_tokens_generated'), await value(page, '#tokens-generated')],
        ['earned', metric(text, 'fm_orch_credit_earned'), await value(page, '#credit-earned')]
      ]
      for (const peer of peers)
        pairs.push([
          `loaded ${peer}`,
          metric(text, 'fm_orch_tunnel_loaded_bytes', peer),
          await value(page, `[data-testid="link-row"][data-peer="${peer}"] [data-field="loadedBytes"]`)
        ])
      return pairs.every(([, m, p]) => m !== undefined && p !== null && m === Number(p)) ? pairs : undefined
    })
    const tokens = compared.find(([name]) => name === 'tokens')?.[1]
    assert.ok(generated > 0)
    assert.equal(tokens, generated, 'every generated token is counted')
    assert.ok(compared.filter(([name]) => name.startsWith('loaded')).every(([, m]) => (m ?? 0) > 0))
    assert.match((await page.locator('#load-text').textContent()) ?? '', /loaded/)
  })

  it('sends snapshots that fit the shared schema, and pushes one on connect', async () => {
    const socket = new WebSocket(`${orch.url.replace('http', 'ws')}/ws`)
    const first = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no snapshot on connect')), 10_000)
      socket.addEventListener('message', (event) => {
        clearTimeout(timer)
        resolve(JSON.parse(String(event.data)))
      })
      socket.addEventListener('error', () => reject(new Error('socket error')))
    })
    socket.close()
    const snapshot = DashboardSnapshot.parse(first)
    assert.equal(snapshot.pool, pool)
    assert.equal(snapshot.state, 'serving')
    assert.equal(snapshot.workers.length, 3)
    assert.equal(snapshot.plan.length, 2)
  })

  it('shows a worker leaving, and saves a screenshot', async () => {
    const third = agents[2] as AgentProcess
    await third.stop()
    const rows = await until('the third worker to be shown gone', async () => {
      const found = await workerRows(page)
      return found.get(third.peerId) === 'gone' ? found : undefined
    })
    assert.ok(agents.slice(0, 2).every((a) => rows.get(a.peerId) === 'present'))
    assert.equal(await value(page, '#worker-count'), '2')
    // Some traffic, so that the rates and tokens/s in the picture are live figures.
    for (const prompt of PROMPTS) await greedyCompletion(orch.url, prompt, 24)
    await until('a token rate', async () =>
      Number(await value(page, '#tokens-rate')) > 0 ? true : undefined
    )
    await mkdir(join(SCREENSHOT, '..'), { recursive: true })
    await page.screenshot({ path: SCREENSHOT })
  })

  it('says "disconnected" when the orchestrator goes away, and reconnects when it is back', async () => {
    const port = new URL(orch.url).port
    await orch.stop()
    await until('the page to say disconnected', async () =>
      (await page.locator('#connection').textContent()) === 'disconnected' ? true : undefined
    )
    assert.equal(await page.locator('#banner').isVisible(), true)
    // The same orchestrator again, on the same port (the last --port wins).
    const again = await spawnOrchestrator([...serveArgs, '--port', port])
    processes.push(again)
    await until('the page to reconnect', async () =>
      (await page.locator('#connection').textContent()) === 'live' ? true : undefined
    )
    assert.equal(await page.locator('#banner').isVisible(), false)
    assert.equal(await page.evaluate<unknown>('window.loadMark'), 'first', 'without a reload')
  })
})
