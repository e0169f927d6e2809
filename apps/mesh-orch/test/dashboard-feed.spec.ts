import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { createServer, type Server } from 'node:http'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import type { WorkerDirectory } from '@frankenstein-mesh/mesh'
import pino from 'pino'
import { startDashboard, type Dashboard } from '../src/dashboard/feed.ts'
import { DashboardSnapshot } from '../src/dashboard/snapshot.ts'
import type { Orchestrator } from '../src/orchestrator.ts'
import type { OrchestratorStatus } from '../src/serve.ts'
import { peer, servingStatus } from './fixtures/status.ts'

type Events = Orchestrator extends EventEmitter<infer E> ? E : never
type DirectoryEvents = WorkerDirectory extends EventEmitter<infer E> ? E : never

/** Resolves with the next `n` messages of a socket (or rejects past the bound). */
function messages(socket: WebSocket, n: number, timeoutMs = 5_000): Promise<DashboardSnapshot[]> {
  return new Promise((resolve, reject) => {
    const got: DashboardSnapshot[] = []
    const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${n} messages`)), timeoutMs)
    socket.addEventListener('message', (event) => {
      got.push(DashboardSnapshot.parse(JSON.parse(String(event.data))))
      if (got.length === n) {
        clearTimeout(timer)
        resolve(got)
      }
    })
  })
}

function closed(socket: WebSocket, timeoutMs = 5_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('not closed')), timeoutMs)
    socket.addEventListener('close', (event) => {
      clearTimeout(timer)
      resolve(event.code)
    })
  })
}

async function until(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('the dashboard feed', () => {
  const orchestrator = Object.assign(new EventEmitter<Events>(), {
    directory: new EventEmitter<DirectoryEvents>()
  })
  let status: OrchestratorStatus = servingStatus()
  let dashboard: Dashboard
  let server: Server
  let url: string
  const sockets: WebSocket[] = []
  const feed = async (options: { maxBufferedBytes?: number; intervalMs: number }) => {
    const started = startDashboard({
      orchestrator,
      status: () => status,
      logger: pino({ level: 'silent' }),
      maxClients: 3,
      ...options
    })
    const http = createServer((_req, res) => res.end())
    http.on('upgrade', (req, socket, head) => started.upgrade(req, socket, head))
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
    return { dashboard: started, server: http, port: (http.address() as { port: number }).port }
  }
  const stop = async (f: { dashboard: Dashboard; server: Server }) => {
    f.dashboard.close()
    f.server.closeAllConnections()
    await new Promise((resolve) => f.server.close(resolve))
  }
  const open = (headers?: Record<string, string>): WebSocket => {
    const socket = new (WebSocket as unknown as new (u: string, o: unknown) => WebSocket)(url, { headers })
    sockets.push(socket)
    return socket
  }

  before(async () => {
    // No periodic pushes: every message in these tests comes from a connect or a change.
    const f = await feed({ intervalMs: 600_000 })
    dashboard = f.dashboard
    server = f.server
    url = `ws://127.0.0.1:${f.port}/ws`
  })
  after(async () => {
    for (const s of sockets) s.close()
    await stop({ dashboard, server })
  })

  it('sends a snapshot on connect and another on each change, without waiting for the interval', async () => {
    const socket = open()
    const [first] = await messages(socket, 1)
    assert.equal(first?.state, 'serving')
    const next = messages(socket, 1)
    status = servingStatus({ state: 'loading' })
    orchestrator.emit('state', 'loading')
    assert.equal((await next)[0]?.state, 'loading')
    const gone = messages(socket, 1)
    orchestrator.directory.emit('removed', { peer: { toString: () => peer(8) } }, 'expired')
    assert.deepEqual(
      (await gone)[0]?.departed.map((d) => [d.peer, d.reason]),
      [[peer(8), 'expired']]
    )
    socket.close()
    await until(() => dashboard.clients === 0)
  })

  it('closes a client that keeps talking, or sends more than a small message', async () => {
    const chatty = open()
    await messages(chatty, 1)
    const code = closed(chatty)
    for (let i = 0; i < 6; i++) chatty.send('hello')
    assert.equal(await code, 1008)
    const big = open()
    await messages(big, 1)
    const bigCode = closed(big)
    big.send('x'.repeat(4096))
    assert.equal(await bigCode, 1009)
  })

  it('refuses another site’s page and clients past the cap', async () => {
    const foreign = open({ origin: 'http://evil.example' })
    await assert.doesNotReject(closed(foreign))
    assert.equal(dashboard.clients, 0)
    const held = [open(), open(), open()]
    await Promise.all(held.map((s) => messages(s, 1)))
    const extra = open()
    await closed(extra)
    assert.equal(dashboard.clients, 3)
    for (const s of held) s.close()
    await until(() => dashboard.clients === 0)
  })

  it('drops a client that stops reading instead of buffering for it', async () => {
    // A large snapshot, pushed every 5 ms, to a raw socket that never reads.
    const fast = await feed({ intervalMs: 5, maxBufferedBytes: 256 * 1024 })
    status = servingStatus({
      workers: Array.from({ length: 256 }, (_, i) => ({
        ...(servingStatus().workers[2] as OrchestratorStatus['workers'][number]),
        peer: peer(1000 + i)
      }))
    })
    const raw = connect(fast.port, '127.0.0.1')
    raw.write(
      'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'
    )
    raw.pause()
    try {
      await until(() => fast.dashboard.clients === 1)
      await until(() => fast.dashboard.clients === 0, 30_000)
    } finally {
      raw.destroy()
      await stop(fast)
    }
  })
})
