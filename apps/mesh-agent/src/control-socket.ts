import { chmod, rm } from 'node:fs/promises'
import { createServer, request, type Server } from 'node:http'
import { connect } from 'node:net'
import type { Logger } from 'pino'
import type { AgentStatus } from './agent-status.ts'
import { AgentError } from './errors.ts'

export interface ControlServerInit {
  /** Unix socket path; only this user may connect (mode 0600). */
  readonly path: string
  readonly logger: Logger
  readonly status: () => AgentStatus
  readonly leave: () => void
}

/**
 * The running agent's local control endpoint: `GET /status` and `POST /leave`, HTTP over a Unix
 * socket, so that nothing of it is reachable from the network.
 */
export async function startControlServer(init: ControlServerInit): Promise<{ close(): Promise<void> }> {
  await removeStaleSocket(init.path)
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(init.status()))
    } else if (req.method === 'POST' && req.url === '/leave') {
      res.writeHead(202, { 'content-type': 'application/json' }).end('{"leaving":true}')
      init.leave()
    } else {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}')
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(init.path, resolve)
  })
  await chmod(init.path, 0o600)
  init.logger.debug({ path: init.path }, 'control socket listening')
  return {
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(init.path, { force: true })
    }
  }
}

/** A socket file left by an agent that died: nobody answers on it any more. */
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
    throw new AgentError('ERR_AGENT_RUNNING', `another agent is running with this identity (${path} answers)`)
  await rm(path, { force: true })
}

/** Calls the running agent's control endpoint; rejects with ERR_AGENT_NOT_RUNNING when nobody answers. */
export async function callControl(
  path: string,
  method: 'GET' | 'POST',
  url: string,
  timeoutMs = 5_000
): Promise<unknown> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath: path, method, path: url, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)))
        }
      })
    })
    req.once('timeout', () => req.destroy(new Error('the agent did not answer in time')))
    req.once('error', (err: NodeJS.ErrnoException) => {
      const notRunning = err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
      reject(
        notRunning
          ? new AgentError('ERR_AGENT_NOT_RUNNING', `no agent is running (nothing answers on ${path})`, {
              cause: err
            })
          : err
      )
    })
    req.end()
  })
}
