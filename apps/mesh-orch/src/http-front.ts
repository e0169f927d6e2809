import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { OrchError } from './errors.ts'
import type { Orchestrator } from './orchestrator.ts'
import type { Caller, Spending } from './spending.ts'
import {
  StreamTracker,
  resumable,
  resumeStream,
  upstreamBody,
  type ResumableRequest
} from './stream-resume.ts'
import { refuseUpgrade } from './upgrade-refusal.ts'

export interface HttpFrontInit {
  readonly orchestrator: Orchestrator
  readonly host: string
  readonly port: number
  readonly logger: Logger
  /** How long a request may wait for a plan to serve before a 503. */
  readonly queueTimeoutMs: number
  readonly maxBodyBytes?: number | undefined
  /** Attempts for a request whose llama-server died before answering. */
  readonly attempts?: number | undefined
  /** API keys, priority by credit, charging by tokens. Without it every request is anonymous and unordered. */
  readonly spending?: Spending | undefined
  /** Prometheus text for GET /metrics. */
  readonly metrics?: (() => Promise<{ text: string; contentType: string }>) | undefined
  /** Tokens generated for callers, as answers and streams report them. */
  readonly onTokens?: ((generated: number) => void) | undefined
  /** The live dashboard: its page at GET /dashboard (and /), its feed as a WebSocket at /ws. */
  readonly dashboard?: DashboardRoutes | undefined
}

export interface DashboardRoutes {
  readonly page: string
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void
}

export interface HttpFront {
  readonly url: string
  close(): Promise<void>
}

/** Response headers that describe the upstream connection, not the content: never copied. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-encoding'
])

/**
 * The pool's OpenAI-compatible API: every request waits (bounded) for a serving plan, goes to
 * that plan's llama-server, and is retried on the next plan when llama-server died before it
 * answered. `/health` answers from the orchestrator itself.
 */
export async function startHttpFront(init: HttpFrontInit): Promise<HttpFront> {
  const log = init.logger.child({ component: 'http-front' })
  const server: Server = createServer((req, res) => {
    handle(req, res, init).catch((err: unknown) => {
      log.warn({ err: (err as Error).message, url: req.url }, 'request failed')
      if (!res.headersSent)
        json(res, 502, { error: { message: 'the pool could not answer', type: 'upstream_error' } })
      else res.destroy()
    })
  })
  server.on('upgrade', (req, socket, head) => {
    if (init.dashboard !== undefined && pathOf(req) === '/ws') init.dashboard.upgrade(req, socket, head)
    else refuseUpgrade(socket, '404 Not Found')
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: init.host, port: init.port }, resolve)
  })
  const address = server.address()
  if (address === null || typeof address === 'string')
    throw new OrchError('ERR_LISTEN', 'the HTTP front has no address')
  const url = `http://${init.host.includes(':') ? `[${init.host}]` : init.host}:${address.port}`
  log.info({ url }, 'HTTP front listening')
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

async function handle(req: IncomingMessage, res: ServerResponse, init: HttpFrontInit): Promise<void> {
  if (req.url === '/health' && req.method === 'GET') {
    const state = init.orchestrator.state
    json(res, state === 'serving' ? 200 : 503, {
      status: state === 'serving' ? 'ok' : state,
      plan: init.orchestrator.plan?.workers.map((w) => w.id) ?? []
    })
    return
  }
  if (req.url === '/metrics' && req.method === 'GET' && init.metrics !== undefined) {
    const { text, contentType } = await init.metrics()
    res.writeHead(200, { 'content-type': contentType }).end(text)
    return
  }
  const path = pathOf(req)
  if (init.dashboard !== undefined && req.method === 'GET' && (path === '/' || path === '/dashboard')) {
    if (path === '/') res.writeHead(302, { location: '/dashboard' }).end()
    else
      res
        .writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'cache-control': 'no-store',
          // Everything the page needs is inline; it talks to nothing but its own origin's /ws.
          'content-security-policy':
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:"
        })
        .end(init.dashboard.page)
    return
  }
  const body = await readBody(req, init.maxBodyBytes ?? 8 * 1024 * 1024)
  if (body === undefined) {
    json(res, 413, { error: { message: 'request body too large', type: 'invalid_request_error' } })
    return
  }
  let caller: Caller = { identity: undefined }
  try {
    if (init.spending !== undefined) caller = await init.spending.identify(req)
  } catch (err) {
    json(res, 401, { error: { message: (err as Error).message, type: 'authentication_error' } })
    return
  }
  const abort = new AbortController()
  res.once('close', () => abort.abort())
  // Generations wait for a slot here, credit holders first; the rest pass straight through.
  let release = () => {}
  if (init.spending !== undefined && req.method === 'POST') {
    try {
      release = await init.spending.acquire(caller, init.queueTimeoutMs, abort.signal)
    } catch (err) {
      res.setHeader('retry-after', String(Math.ceil(init.queueTimeoutMs / 1000)))
      json(res, 503, { error: { message: (err as Error).message, type: 'unavailable' } })
      return
    }
  }
  try {
    const tokens = await serve(req, res, body, init, abort)
    await init.spending?.charge(caller, tokens).catch((err: unknown) => {
      init.logger.warn({ err: (err as Error).message }, 'could not record a charge')
    })
  } finally {
    release()
  }
}

/** Sends the request to the serving llama-server (retrying on the next plan); returns the tokens it processed. */
async function serve(
  req: IncomingMessage,
  res: ServerResponse,
  body: Buffer,
  init: HttpFrontInit,
  abort: AbortController
): Promise<number> {
  const resume = req.method === 'POST' ? resumable(req.url ?? '', body) : undefined
  const upstreamPayload = resume === undefined ? body : Buffer.from(upstreamBody(resume))
  for (let attempt = 1; ; attempt++) {
    let admission
    try {
      admission = await init.orchestrator.admit(init.queueTimeoutMs, abort.signal)
    } catch (err) {
      res.setHeader('retry-after', String(Math.ceil(init.queueTimeoutMs / 1000)))
      json(res, 503, { error: { message: (err as Error).message, type: 'unavailable' } })
      return 0
    }
    try {
      const upstream = await fetch(`${admission.url}${req.url ?? '/'}`, {
        method: req.method ?? 'GET',
        headers: forwardHeaders(req),
        body: upstreamPayload.length > 0 ? upstreamPayload : null,
        signal: abort.signal
      })
      if (resume !== undefined && upstream.ok)
        return await relayResumable(upstream, res, resume, init, abort.signal)
      return await relay(upstream, res, init.onTokens)
    } catch (err) {
      // llama-server went away before answering: the request is whole, so it can go to the next plan.
      if (res.headersSent || abort.signal.aborted || attempt >= (init.attempts ?? 3)) throw err
    } finally {
      admission.done()
    }
  }
}

/** Largest JSON response kept aside to read its token usage from. */
const MAX_USAGE_BODY = 4 * 1024 * 1024

/** Relays a response as it comes; returns the tokens a JSON answer says it processed (0 if none). */
async function relay(
  upstream: Response,
  res: ServerResponse,
  onTokens: ((generated: number) => void) | undefined
): Promise<number> {
  const isJson = (upstream.headers.get('content-type') ?? '').includes('application/json')
  const kept: Uint8Array[] = []
  let keptBytes = 0
  const headers: Record<string, string> = {}
  upstream.headers.forEach((value, key) => {
    if (!HOP_BY_HOP.has(key)) headers[key] = value
  })
  res.writeHead(upstream.status, headers)
  if (upstream.body === null) {
    res.end()
    return 0
  }
  for await (const chunk of upstream.body as AsyncIterable<Uint8Array>) {
    if (isJson && keptBytes + chunk.byteLength <= MAX_USAGE_BODY) {
      kept.push(chunk)
      keptBytes += chunk.byteLength
    }
    if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve))
  }
  res.end()
  if (!isJson) return 0
  const body = Buffer.concat(kept)
  onTokens?.(generatedOf(body))
  return tokensOf(body)
}

/** Tokens generated, as an OpenAI (`usage.completion_tokens`) or llama.cpp (`tokens_predicted`) answer says. */
export function generatedOf(body: Buffer): number {
  try {
    const answer = JSON.parse(body.toString('utf8')) as {
      usage?: { completion_tokens?: unknown }
      tokens_predicted?: unknown
    }
    return count(answer.usage?.completion_tokens) || count(answer.tokens_predicted)
  } catch {
    return 0
  }
}

function count(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.floor(v) : 0
}

/** Tokens processed, as an OpenAI (`usage`) or llama.cpp (`tokens_evaluated`, `tokens_predicted`) answer says. */
export function tokensOf(body: Buffer): number {
  try {
    const answer = JSON.parse(body.toString('utf8')) as {
      usage?: { total_tokens?: unknown }
      tokens_evaluated?: unknown
      tokens_predicted?: unknown
    }
    return (
      count(answer.usage?.total_tokens) || count(answer.tokens_evaluated) + count(answer.tokens_predicted)
    )
  } catch {
    return 0
  }
}

/**
 * Relays an OpenAI stream while tracking its tokens; when llama-server dies mid-stream, waits for
 * the next plan and continues the same completion there, so the client sees one unbroken stream.
 */
async function relayResumable(
  upstream: Response,
  res: ServerResponse,
  request: ResumableRequest,
  init: HttpFrontInit,
  signal: AbortSignal
): Promise<number> {
  const headers: Record<string, string> = {}
  upstream.headers.forEach((value, key) => {
    if (!HOP_BY_HOP.has(key)) headers[key] = value
  })
  res.writeHead(upstream.status, headers)
  const tracker = new StreamTracker(request)
  let counted = 0
  const write = async (text: string): Promise<void> => {
    init.onTokens?.(tracker.tokens.length - counted)
    counted = tracker.tokens.length
    if (text !== '' && !res.write(text)) await new Promise((resolve) => res.once('drain', resolve))
  }
  try {
    for await (const bytes of upstream.body ?? [])
      await write(tracker.push(Buffer.from(bytes).toString('utf8')))
  } catch (err) {
    if (signal.aborted) throw err
  }
  for (let attempt = 1; !tracker.finished && !signal.aborted; attempt++) {
    init.logger.warn({ tokens: tracker.tokens.length, attempt }, 'stream cut: resuming it on the next plan')
    const admission = await init.orchestrator.admit(init.queueTimeoutMs, signal)
    try {
      for await (const event of resumeStream(admission.url, request, tracker, signal)) await write(event)
      tracker.markFinished()
    } catch (err) {
      signal.throwIfAborted() // the client went away: nothing to resume for
      if (attempt >= (init.attempts ?? 3)) throw err
    } finally {
      admission.done()
    }
  }
  res.end()
  // A stream is charged the tokens it generated (its prompt is not reported on the way).
  return tracker.tokens.length
}

function forwardHeaders(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {}
  for (const [key, value] of Object.entries(req.headers)) {
    if (typeof value === 'string' && !HOP_BY_HOP.has(key) && key !== 'host') headers[key] = value
  }
  return headers
}

/** The whole body, or undefined past `max` bytes (checked as it arrives, before it is kept). */
async function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > max) return undefined
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

/** The request's path without its query (undefined when it is not a path). */
function pathOf(req: IncomingMessage): string | undefined {
  try {
    return new URL(req.url ?? '', 'http://front').pathname
  } catch {
    return undefined
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
}
