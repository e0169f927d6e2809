import { readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { WorkerEntry } from '@frankenstein-mesh/mesh'
import type { Logger } from 'pino'
import { WebSocketServer, type WebSocket } from 'ws'
import type { DashboardRoutes } from '../http-front.ts'
import type { OrchestratorStatus } from '../serve.ts'
import { DashboardSnapshot, LinkRates, MAX_DEPARTED, dashboardSnapshot, type Departure } from './snapshot.ts'
import { refuseUpgrade } from '../upgrade-refusal.ts'

export interface DashboardInit {
  /** Only its change events (and its directory's) are used: they trigger pushes. */
  readonly orchestrator: WatchedOrchestrator
  /** The orchestrator's status: the one snapshot that `status` and /metrics read too. */
  readonly status: () => OrchestratorStatus
  readonly logger: Logger
  /** Dashboards open at once; more are refused with a 503. */
  readonly maxClients?: number | undefined
  /** A client whose unsent backlog passes this is too slow to follow: it is dropped. */
  readonly maxBufferedBytes?: number | undefined
  /** Pushes without a change, for the rates; changes push at once. */
  readonly intervalMs?: number | undefined
}

type OrchestratorChange = 'state' | 'plan' | 'load'
type Removed = (entry: WorkerEntry, reason: string) => void

/** What the feed listens to: the orchestrator's change events and its worker directory's. */
export interface WatchedOrchestrator {
  on(event: OrchestratorChange, listener: () => void): unknown
  off(event: OrchestratorChange, listener: () => void): unknown
  readonly directory: {
    on(event: 'added' | 'updated', listener: () => void): unknown
    on(event: 'removed', listener: Removed): unknown
    off(event: 'added' | 'updated', listener: () => void): unknown
    off(event: 'removed', listener: Removed): unknown
  }
}

export interface Dashboard extends DashboardRoutes {
  /** Dashboards connected now. */
  readonly clients: number
  /** Something the orchestrator does not announce changed (a receipt, a charge): push soon. */
  changed(): void
  close(): void
}

/** Messages a client may send (the page sends none); past them it is closed. */
const MAX_CLIENT_MESSAGES = 4
/** Changes arriving together (a worker's advert, a plan, a state) make one push. */
const COALESCE_MS = 50

export const DASHBOARD_PAGE = readFileSync(new URL('./page.html', import.meta.url), 'utf8')

/**
 * The live dashboard's feed: a WebSocket at /ws on the HTTP front that sends a whole snapshot on
 * connect, on every change the orchestrator announces (workers joining or leaving, plans,
 * states, load progress) and once a second otherwise. Bounded: a few clients, tiny inbound
 * messages, and a client that cannot keep up is dropped rather than buffered for.
 */
export function startDashboard(init: DashboardInit): Dashboard {
  const log = init.logger.child({ component: 'dashboard' })
  const maxClients = init.maxClients ?? 16
  const maxBuffered = init.maxBufferedBytes ?? 1024 * 1024
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024, perMessageDeflate: false })
  const rates = new LinkRates()
  const departed: Departure[] = []

  const snapshot = (): string | undefined => {
    const now = Date.now()
    const status = init.status()
    const shaped = DashboardSnapshot.safeParse(
      dashboardSnapshot(status, rates.update(status.tunnels, now), departed, now)
    )
    if (shaped.success) return JSON.stringify(shaped.data)
    log.error({ issues: shaped.error.issues.slice(0, 5) }, 'dashboard snapshot does not fit its schema')
    return undefined
  }
  const send = (client: WebSocket, text: string): void => {
    if (client.readyState !== client.OPEN) return
    if (client.bufferedAmount > maxBuffered) {
      log.warn({ buffered: client.bufferedAmount }, 'dashboard client too slow: dropped')
      client.terminate()
      return
    }
    client.send(text)
  }
  const push = (): void => {
    if (wss.clients.size === 0) return
    const text = snapshot()
    if (text !== undefined) for (const client of wss.clients) send(client, text)
  }

  let pending: NodeJS.Timeout | undefined
  const changed = (): void => {
    pending ??= setTimeout(() => {
      pending = undefined
      push()
    }, COALESCE_MS)
  }
  const timer = setInterval(push, init.intervalMs ?? 1_000)
  const { orchestrator } = init
  const onRemoved = (entry: WorkerEntry, reason: string): void => {
    departed.unshift({ peer: entry.peer.toString(), at: Date.now(), reason })
    departed.splice(MAX_DEPARTED)
    changed()
  }
  const events = ['state', 'plan', 'load'] as const
  for (const e of events) orchestrator.on(e, changed)
  orchestrator.directory.on('added', changed)
  orchestrator.directory.on('updated', changed)
  orchestrator.directory.on('removed', onRemoved)

  wss.on('connection', (client: WebSocket) => {
    let received = 0
    client.on('message', () => {
      if (++received > MAX_CLIENT_MESSAGES) client.close(1008, 'this feed takes no messages')
    })
    client.on('error', (err) => log.debug({ err: err.message }, 'dashboard client error'))
    const text = snapshot()
    if (text !== undefined) send(client, text)
  })

  return {
    page: DASHBOARD_PAGE,
    changed,
    get clients() {
      return wss.clients.size
    },
    upgrade(req: IncomingMessage, socket: Duplex, head: Buffer) {
      const refusal = refuse(req, wss.clients.size, maxClients)
      if (refusal !== undefined) {
        log.warn({ reason: refusal }, 'dashboard connection refused')
        refuseUpgrade(socket, refusal)
        return
      }
      wss.handleUpgrade(req, socket, head, (client) => wss.emit('connection', client, req))
    },
    close() {
      clearInterval(timer)
      clearTimeout(pending)
      for (const e of events) orchestrator.off(e, changed)
      orchestrator.directory.off('added', changed)
      orchestrator.directory.off('updated', changed)
      orchestrator.directory.off('removed', onRemoved)
      for (const client of wss.clients) client.terminate()
      wss.close()
    }
  }
}

/** Why an upgrade is refused (an HTTP status line), or undefined to accept it. */
export function refuse(req: IncomingMessage, clients: number, maxClients: number): string | undefined {
  // Another site's page must not read the pool's state through the owner's browser.
  const origin = req.headers.origin
  if (origin !== undefined) {
    let host: string | undefined
    try {
      host = new URL(origin).host
    } catch {
      host = undefined
    }
    if (host !== req.headers.host) return '403 Forbidden'
  }
  if (clients >= maxClients) return '503 Service Unavailable'
  return undefined
}
