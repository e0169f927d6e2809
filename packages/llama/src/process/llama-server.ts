import type { Logger } from 'pino'
import { ProcessError } from '../errors.ts'
import { freeLoopbackPort } from './free-port.ts'
import { startProcess, type ExitInfo, type ManagedProcess } from './managed-process.ts'
import { waitReady } from './wait-ready.ts'

export interface LlamaServerInit {
  readonly binary: string
  readonly model: string
  readonly logger: Logger
  /** Loopback port for the HTTP API; a free one is picked when absent. */
  readonly port?: number | undefined
  /** rpc-server endpoints (`127.0.0.1:port`), in plan order. Empty: run on the local CPU. */
  readonly rpc?: readonly string[] | undefined
  /** Share of the layers per rpc-server, same order as `rpc`. */
  readonly tensorSplit?: readonly number[] | undefined
  readonly contextSize?: number | undefined
  /** Parallel slots (`-np`): continuous batching serves many users at the cost of one. */
  readonly parallel?: number | undefined
  readonly threads?: number | undefined
  readonly extraArgs?: readonly string[] | undefined
  readonly readyTimeoutMs?: number | undefined
  readonly signal?: AbortSignal | undefined
}

/** What llama-server reported it placed on one device while loading (MiB, as it prints them). */
export interface DeviceBuffers {
  /** As llama.cpp names it: `RPC0[127.0.0.1:50051]`, `CPU_Mapped`, `CUDA0`. */
  readonly device: string
  readonly modelMiB: number
  readonly kvMiB: number
}

export interface LlamaServer {
  readonly port: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly process: ManagedProcess
  /** Per device, the model weights and KV cache llama-server placed there. */
  readonly buffers: readonly DeviceBuffers[]
  stop(): Promise<ExitInfo>
}

/** The argument list, kept apart so that plans can be shown and tested without a process. */
export function llamaServerArgs(init: Omit<LlamaServerInit, 'binary' | 'logger'>, port: number): string[] {
  const args = ['--model', init.model, '--host', '127.0.0.1', '--port', String(port)]
  args.push('--ctx-size', String(init.contextSize ?? 2048), '--parallel', String(init.parallel ?? 1))
  // Our plan decides placement: llama.cpp must not second-guess it from reported free memory.
  args.push('--fit', 'off', '--no-webui')
  // Verbosity 4 adds the load report (buffer sizes per device) that `buffers` is read from.
  args.push('--log-verbosity', '4')
  if (init.threads !== undefined) args.push('--threads', String(init.threads))
  const rpc = init.rpc ?? []
  if (rpc.length > 0) {
    args.push('--rpc', rpc.join(','), '--n-gpu-layers', 'all')
    if (init.tensorSplit !== undefined) {
      if (init.tensorSplit.length !== rpc.length) {
        throw new ProcessError(
          'ERR_BAD_PLAN',
          `tensor split has ${init.tensorSplit.length} parts for ${rpc.length} rpc-servers`
        )
      }
      args.push('--tensor-split', init.tensorSplit.join(','))
    }
  }
  args.push(...(init.extraArgs ?? []))
  return args
}

/** Starts llama-server on 127.0.0.1 and waits until `/health` answers 200 (model loaded). */
export async function startLlamaServer(init: LlamaServerInit): Promise<LlamaServer> {
  const port = init.port ?? (await freeLoopbackPort())
  const buffers = new Map<string, { modelMiB: number; kvMiB: number }>()
  const proc = startProcess({
    name: 'llama-server',
    command: init.binary,
    args: llamaServerArgs(init, port),
    logger: init.logger,
    tailLines: 80,
    onLine: (line) => recordBuffer(buffers, line)
  })
  const url = `http://127.0.0.1:${port}`
  try {
    await waitReady(
      proc,
      async (signal) => {
        const res = await fetch(`${url}/health`, { signal })
        await res.body?.cancel()
        return res.status === 200
      },
      {
        timeoutMs: init.readyTimeoutMs ?? 120_000,
        intervalMs: 100,
        signal: init.signal
      }
    )
  } catch (err) {
    await proc.stop()
    throw err
  }
  init.logger.info({ url, pid: proc.pid, rpc: init.rpc ?? [] }, 'llama-server ready')
  return {
    port,
    url,
    process: proc,
    buffers: [...buffers].map(([device, sizes]) => ({ device, ...sizes })),
    stop: () => proc.stop()
  }
}

const BUFFER_LINE = /(load_tensors|llama_kv_cache):\s+(\S+) (?:model|KV) buffer size =\s+([\d.]+) MiB/

function recordBuffer(buffers: Map<string, { modelMiB: number; kvMiB: number }>, line: string): void {
  const match = BUFFER_LINE.exec(line)
  if (match === null) return
  const [, phase, device = '', mib = '0'] = match
  const entry = buffers.get(device) ?? { modelMiB: 0, kvMiB: 0 }
  if (phase === 'load_tensors') entry.modelMiB += Number(mib)
  else entry.kvMiB += Number(mib)
  buffers.set(device, entry)
}
