import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'
import { createInterface } from 'node:readline'
import type { Logger } from 'pino'
import { ProcessError } from '../errors.ts'

export interface ExitInfo {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** True when we asked it to stop; false when it died on its own or never started. */
  readonly requested: boolean
  /** Last lines it wrote, oldest first: the usual place to learn why it died. */
  readonly tail: readonly string[]
  readonly spawnError?: Error | undefined
}

export interface ManagedProcessInit {
  /** Short name for logs and errors: `rpc-server`, `llama-server`. */
  readonly name: string
  readonly command: string
  readonly args: readonly string[]
  readonly logger: Logger
  readonly env?: NodeJS.ProcessEnv | undefined
  /** After SIGTERM, how long to wait before SIGKILL. */
  readonly stopTimeoutMs?: number | undefined
  readonly tailLines?: number | undefined
  /**
   * Start it with SIGPIPE ignored (the disposition survives exec). ggml-rpc-server writes replies
   * with plain send(): a client that disconnects while a reply is on its way kills it otherwise.
   */
  readonly ignoreSigpipe?: boolean | undefined
  /** Sees every line the process writes, e.g. to follow a build's progress. */
  readonly onLine?: ((line: string) => void) | undefined
}

export interface ManagedProcess {
  readonly name: string
  readonly pid: number | undefined
  readonly running: boolean
  readonly exited: Promise<ExitInfo>
  /** SIGTERM, then SIGKILL after the stop timeout; resolves when the process is gone. */
  stop(): Promise<ExitInfo>
  /** SIGKILL now: for a process that can only fail from here (its peer is gone). */
  kill(): Promise<ExitInfo>
}

const live = new Set<ChildProcess>()
let exitHookInstalled = false

/** Children must not outlive us, even when we exit without stopping them (a crash, a test bail). */
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.on('exit', () => {
      for (const c of live) c.kill('SIGKILL')
    })
  }
  live.add(child)
  child.once('exit', () => live.delete(child))
}

let deathSignalWrapper: string[] | undefined

/**
 * On Linux, `setpriv --pdeathsig KILL` makes the kernel kill the child when we die, however we
 * die (SIGKILL, OOM): an agent that crashes must not leave its rpc-server behind. setpriv execs
 * the command, so the pid is the command's own. Elsewhere the exit hook above is the only guard.
 */
function dieWithParent(): string[] {
  if (deathSignalWrapper === undefined) {
    deathSignalWrapper = []
    if (process.platform === 'linux') {
      try {
        const help = execFileSync('setpriv', ['--help'], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'],
          timeout: 5_000
        })
        if (help.includes('--pdeathsig')) deathSignalWrapper = ['setpriv', '--pdeathsig', 'KILL', '--']
      } catch {
        // no setpriv: a plain spawn
      }
    }
  }
  return deathSignalWrapper
}

function executable(command: string): boolean {
  const candidates = command.includes('/')
    ? [command]
    : (process.env['PATH'] ?? '').split(delimiter).map((dir) => join(dir, command))
  return candidates.some((path) => {
    try {
      accessSync(path, constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

export function startProcess(init: ManagedProcessInit): ManagedProcess {
  const stopTimeoutMs = init.stopTimeoutMs ?? 5_000
  const tailLines = init.tailLines ?? 40
  // A command that cannot run is spawned plainly, so that it fails as a spawn error (ENOENT).
  const runnable = executable(init.command)
  const wrapper = runnable ? dieWithParent() : []
  const sigpipe =
    runnable && init.ignoreSigpipe === true ? ['/bin/sh', '-c', 'trap "" PIPE; exec "$0" "$@"'] : []
  const [command = init.command, ...args] = [...wrapper, ...sigpipe, init.command, ...init.args]
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: init.env ?? process.env })
  const log = init.logger.child({ component: init.name, childPid: child.pid })
  const tail: string[] = []
  let requested = false

  const capture = (stream: NodeJS.ReadableStream, name: string): void => {
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      tail.push(line)
      if (tail.length > tailLines) tail.shift()
      log.debug({ stream: name, line }, 'output')
      init.onLine?.(line)
    })
  }
  capture(child.stdout as NodeJS.ReadableStream, 'stdout')
  capture(child.stderr as NodeJS.ReadableStream, 'stderr')
  track(child)

  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('error', (spawnError) => {
      if (child.pid === undefined) resolve({ code: null, signal: null, requested, tail, spawnError })
    })
    child.once('close', (code, signal) => {
      const info = { code, signal, requested, tail: [...tail] }
      if (requested) log.info({ code, signal }, 'stopped')
      else if (code === 0) log.debug({ code }, 'exited')
      else log.warn({ code, signal, tail: info.tail.slice(-5) }, 'exited with failure')
      resolve(info)
    })
  })

  let running = child.pid !== undefined
  void exited.then(() => (running = false))
  log.debug({ command: init.command, args: init.args }, 'started')

  return {
    name: init.name,
    pid: child.pid,
    get running() {
      return running
    },
    exited,
    async kill() {
      if (!running) return await exited
      requested = true
      child.kill('SIGKILL')
      return await exited
    },
    async stop() {
      if (!running) return await exited
      requested = true
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs)
      try {
        return await exited
      } finally {
        clearTimeout(timer)
      }
    }
  }
}

/** One line a person can act on: "exited with code 1", "killed by SIGABRT". */
export function describeExit(info: ExitInfo): string {
  if (info.spawnError !== undefined) return `could not start: ${info.spawnError.message}`
  if (info.signal !== null) return `killed by ${info.signal}`
  return `exited with code ${info.code}`
}

/** The error to throw when a process died while we still needed it. */
export function exitError(name: string, info: ExitInfo): ProcessError {
  const last = info.tail.slice(-3).join(' | ')
  return new ProcessError(
    'ERR_PROCESS_EXITED',
    `${name} ${describeExit(info)}${last === '' ? '' : `: ${last}`}`,
    {
      cause: info.spawnError
    }
  )
}
