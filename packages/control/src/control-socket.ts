import { chmod, rm } from 'node:fs/promises'
import { createServer, request, type IncomingMessage, type Server } from 'node:http'
import { connect } from 'node:net'

export class ControlError extends Error {
  override readonly name = 'ControlError'
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}

/** A control answer sent as it is, not as JSON (e.g. Prometheus metrics). */
export class TextResponse {
  readonly text: string
  readonly contentType: string

  constructor(text: string, contentType = 'text/plain; charset=utf-8') {
    this.text = text
    this.contentType = contentType
  }
}

/** `'GET /status'` → handler; a handler gets the parsed JSON body (POST) and returns JSON (or a TextResponse). */
export type ControlRoutes = Record<string, (body: unknown) => unknown>

export interface ControlServer {
  readonly path: string
  close(): Promise<void>
}

const MAX_BODY = 64 * 1024

/**
 * A process's local control endpoint: HTTP with JSON bodies over a Unix socket that only its
 * user may open (mode 0600), so nothing of it is reachable from the network. A socket file left
 * by a process that died is replaced; one that still answers means another instance runs.
 */
export async function startControlServer(path: string, routes: ControlRoutes): Promise<ControlServer> {
  await removeStaleSocket(path)
  const server: Server = createServer((req, res) => {
    const route = routes[`${req.method ?? 'GET'} ${req.url ?? '/'}`]
    if (route === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"no such command"}')
      return
    }
    readJson(req)
      .then(async (body) => {
        const answer = await route(body)
        if (answer instanceof TextResponse)
          res.writeHead(200, { 'content-type': answer.contentType }).end(answer.text)
        else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer ?? null))
      })
      .catch((err: unknown) => {
        const code = (err as { code?: unknown }).code
        res
          .writeHead(400, { 'content-type': 'application/json' })
          .end(JSON.stringify({ error: (err as Error).message, code }))
      })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, resolve)
  })
  await chmod(path, 0o600)
  return {
    path,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(path, { force: true })
    }
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY) throw new ControlError('ERR_CONTROL_BODY', 'control request too large')
    chunks.push(chunk)
  }
  if (size === 0) return undefined
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

async function removeStaleSocket(path: string): Promise<void> {
  const alive = await new Promise<boolean>((resolve) => {
    const socket = connect(path)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
  if (alive)
    throw new ControlError(
      'ERR_ALREADY_RUNNING',
      `another instance is running (its control socket ${path} answers)`
    )
  await rm(path, { force: true })
}

/** Calls a running process's control endpoint; ERR_NOT_RUNNING when nobody answers on the socket. */
export async function callControl(
  path: string,
  method: 'GET' | 'POST',
  url: string,
  body?: unknown,
  timeoutMs = 10_000
): Promise<unknown> {
  return await new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: path,
        method,
        path: url,
        timeout: timeoutMs,
        headers: { 'content-type': 'application/json' }
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          if (res.statusCode === 200 && res.headers['content-type']?.startsWith('text/plain') === true) {
            resolve(Buffer.concat(chunks).toString('utf8'))
            return
          }
          try {
            const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
              error?: string
              code?: string
            } | null
            if (res.statusCode !== 200)
              reject(
                new ControlError(
                  parsed?.code ?? 'ERR_CONTROL_FAILED',
                  parsed?.error ?? `HTTP ${res.statusCode}`
                )
              )
            else resolve(parsed)
          } catch (err) {
            reject(new ControlError('ERR_CONTROL_FAILED', 'unreadable control answer', { cause: err }))
          }
        })
      }
    )
    req.once('timeout', () =>
      req.destroy(new ControlError('ERR_CONTROL_TIMEOUT', `no answer on ${path} in time`))
    )
    req.once('error', (err: NodeJS.ErrnoException) => {
      const notRunning = err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
      reject(
        notRunning
          ? new ControlError('ERR_NOT_RUNNING', `nothing is running (no answer on ${path})`, { cause: err })
          : err
      )
    })
    req.end(body === undefined ? undefined : JSON.stringify(body))
  })
}
