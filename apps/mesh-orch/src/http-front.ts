import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { OrchError } from './errors.ts'
import type { Orchestrator } from './orchestrator.ts'
import {
  StreamTracker,
  resumable,
  resumeStream,
  upstreamBody,
  type ResumableRequest
} from './stream-resume.ts'

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
  const body = await readBody(req, init.maxBodyBytes ?? 8 * 1024 * 1024)
  if (body === undefined) {
    json(res, 413, { error: { message: 'request body too large', type: 'invalid_request_error' } })
    return
  }
  const abort = new AbortController()
  res.once('close', () => abort.abort())
  const resume = req.method === 'POST' ? resumable(req.url ?? '', body) : undefined
  const upstreamPayload = resume === undefined ? body : Buffer.from(upstreamBody(resume))
  for (let attempt = 1; ; attempt++) {
    let admission
    try {
      admission = await init.orchestrator.admit(init.queueTimeoutMs, abort.signal)
    } catch (err) {
      res.setHeader('retry-after', String(Math.ceil(init.queueTimeoutMs / 1000)))
      json(res, 503, { error: { message: (err as Error).message, type: 'unavailable' } })
      return
    }
    try {
      const upstream = await fetch(`${admission.url}${req.url ?? '/'}`, {
        method: req.method ?? 'GET',
        headers: forwardHeaders(req),
        body: upstreamPayload.length > 0 ? upstreamPayload : null,
        signal: abort.signal
      })
      if (resume !== undefined && upstream.ok) await relayResumable(upstream, res, resume, init, abort.signal)
      else await relay(upstream, res)
      return
    } catch (err) {
      // llama-server went away before answering: the request is whole, so it can go to the next plan.
      if (res.headersSent || abort.signal.aborted || attempt >= (init.attempts ?? 3)) throw err
    } finally {
      admission.done()
    }
  }
}

async function relay(upstream: Response, res: ServerResponse): Promise<void> {
  const headers: Record<string, string> = {}
  upstream.headers.forEach((value, key) => {
    if (!HOP_BY_HOP.has(key)) headers[key] = value
  })
  res.writeHead(upstream.status, headers)
  if (upstream.body === null) {
    res.end()
    return
  }
  for await (const chunk of upstream.body) {
    if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve))
  }
  res.end()
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
): Promise<void> {
  const headers: Record<string, string> = {}
  upstream.headers.forEach((value, key) => {
    if (!HOP_BY_HOP.has(key)) headers[key] = value
  })
  res.writeHead(upstream.status, headers)
  const tracker = new StreamTracker(request)
  const write = async (text: string): Promise<void> => {
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

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
}
