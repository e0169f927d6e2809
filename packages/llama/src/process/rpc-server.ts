import type { Logger } from 'pino'
import { ProcessError } from '../errors.ts'
import { connectRpc, type DeviceMemory, type RpcVersion } from '../rpc/client.ts'
import { freeLoopbackPort } from './free-port.ts'
import { listeningSockets } from './listening-sockets.ts'
import { exitError, startProcess, type ExitInfo, type ManagedProcess } from './managed-process.ts'
import { waitReady } from './wait-ready.ts'

export interface RpcServerInit {
  readonly binary: string
  readonly logger: Logger
  /** Loopback port; a free one is picked when absent. */
  readonly port?: number | undefined
  readonly threads?: number | undefined
  /** Backend devices to serve (`-d`), e.g. `CUDA0`; rpc-server's default otherwise. */
  readonly devices?: readonly string[] | undefined
  readonly readyTimeoutMs?: number | undefined
  readonly signal?: AbortSignal | undefined
}

export interface RpcServer {
  readonly host: '127.0.0.1'
  readonly port: number
  /** `127.0.0.1:<port>`, as llama-server's `--rpc` wants it. */
  readonly endpoint: string
  readonly version: RpcVersion
  readonly devices: readonly DeviceMemory[]
  /** `address:port` of every socket it listens on, as the kernel says (undefined: cannot tell here). */
  readonly listening: readonly string[] | undefined
  readonly process: ManagedProcess
  stop(): Promise<ExitInfo>
}

const BIND_ATTEMPTS = 3

/**
 * Starts ggml-rpc-server on 127.0.0.1 only (never with `-c`: no model bytes on the worker's disk),
 * and waits until it answers an RPC HELLO. Its startup banner is not flushed to a pipe, so the
 * HELLO is the only reliable readiness signal.
 */
export async function startRpcServer(init: RpcServerInit): Promise<RpcServer> {
  for (let attempt = 1; ; attempt++) {
    const port = init.port ?? (await freeLoopbackPort())
    try {
      return await startOnPort(init, port)
    } catch (err) {
      const portRace =
        err instanceof ProcessError && err.code === 'ERR_PROCESS_EXITED' && init.port === undefined
      if (!portRace || attempt === BIND_ATTEMPTS) throw err
      init.logger.warn({ port, attempt }, 'rpc-server exited at start, retrying on another port')
    }
  }
}

async function startOnPort(init: RpcServerInit, port: number): Promise<RpcServer> {
  const args = ['--host', '127.0.0.1', '--port', String(port)]
  if (init.threads !== undefined) args.push('--threads', String(init.threads))
  if (init.devices !== undefined && init.devices.length > 0) args.push('--device', init.devices.join(','))
  const proc = startProcess({
    name: 'rpc-server',
    command: init.binary,
    args,
    logger: init.logger,
    ignoreSigpipe: true,
    // ggml attaches gdb to print a backtrace when it aborts: seconds of restart delay, for a
    // backtrace nobody reads. A client can make rpc-server abort (see docs/security.md).
    env: { ...process.env, GGML_NO_BACKTRACE: '1' }
  })
  let version: RpcVersion | undefined
  let devices: DeviceMemory[] = []
  try {
    await waitReady(
      proc,
      async (signal) => {
        const client = await connectRpc({ port, timeoutMs: 2_000, signal })
        try {
          const count = await client.deviceCount()
          devices = []
          for (let d = 0; d < count; d++) devices.push(await client.deviceMemory(d))
          version = client.version
          return true
        } finally {
          client.close()
        }
      },
      { timeoutMs: init.readyTimeoutMs ?? 30_000, signal: init.signal }
    )
  } catch (err) {
    await proc.stop()
    throw err
  }
  if (version === undefined || !proc.running) throw exitError(proc.name, await proc.exited)
  // Whatever the arguments said (a wrapper script can change them), check what it listens on.
  const sockets = proc.pid === undefined ? undefined : await listeningSockets(proc.pid)
  const exposed = sockets?.filter((s) => !s.loopback) ?? []
  if (exposed.length > 0) {
    await proc.stop()
    throw new ProcessError(
      'ERR_RPC_EXPOSED',
      `rpc-server listens on ${exposed.map((s) => `${s.address}:${s.port}`).join(', ')}: it must face loopback only, so it was stopped`
    )
  }
  const listening = sockets?.map((s) => `${s.address}:${s.port}`)
  if (listening === undefined)
    init.logger.warn('cannot list rpc-server sockets on this platform: trusting --host 127.0.0.1')
  init.logger.info({ port, pid: proc.pid, version, devices, listening }, 'rpc-server ready')
  return {
    host: '127.0.0.1',
    port,
    endpoint: `127.0.0.1:${port}`,
    version,
    devices,
    listening,
    process: proc,
    stop: () => proc.stop()
  }
}
