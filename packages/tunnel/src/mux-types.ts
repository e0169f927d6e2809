import type { Duplex } from 'node:stream'
import type { RpcVersion } from '@frankenstein-mesh/llama'
import type { Logger } from 'pino'
import type { MuxScheduler } from './mux-scheduler.ts'
import type { BufferRange } from './rpc-isolation.ts'

export interface RpcMuxInit {
  /** Port of the worker's rpc-server on 127.0.0.1. */
  readonly upstreamPort: number
  readonly logger: Logger
  /** Largest SET_TENSOR piece forwarded upstream: bigger uploads are split (default 1 MiB). */
  readonly pieceSize?: number | undefined
  /** Largest GRAPH_COMPUTE a session may send (default 64 MiB): graphs are checked whole. */
  readonly maxGraphBytes?: number | undefined
  /** Reply bytes a session may leave unread before it is dropped (default 256 MiB). */
  readonly maxUnreadBytes?: number | undefined
  /**
   * A pool's weight in sharing rpc-server's compute time, over the weight its sessions attached
   * with (default 1): asked at every scheduling decision. Used by the default scheduler.
   */
  readonly weight?: ((pool: string) => number | undefined) | undefined
  /** Which session's command goes upstream next (default: fairShare with `weight`). */
  readonly scheduler?: MuxScheduler | undefined
  /**
   * Buffer bytes a pool may hold in rpc-server (undefined: no quota). Asked at every ALLOC_BUFFER
   * and GET_DEVICE_MEMORY, so it may change as pools come and go.
   */
  readonly quota?: ((pool: string) => number | undefined) | undefined
  /** Bounds the connect, HELLO and DEVICE_COUNT (default 5 s). */
  readonly timeoutMs?: number | undefined
}

/** How one session ended: `error` is the violation (RpcIsolationError) or failure that ended it. */
export interface MuxSessionEnd {
  readonly id: number
  readonly error: Error | undefined
}

export interface MuxSessionInfo {
  readonly id: number
  readonly pool: string
  readonly label: string
  /** The session's buffers in rpc-server: remote pointer, first byte, size. */
  readonly buffers: ReadonlyArray<{ readonly ptr: bigint } & BufferRange>
  /** Buffer bytes rpc-server holds for the session. */
  readonly heldBytes: number
  readonly queuedBytes: number
  readonly commands: number
  /** Weight and input bytes the session uploaded with SET_TENSOR. */
  readonly uploadBytes: number
  /** GRAPH_RECOMPUTEs sent as the session's own last GRAPH_COMPUTE, another session having computed. */
  readonly graphRestores: number
  /** ALLOC_BUFFERs answered "out of memory" by the multiplexer: they were past the pool's quota. */
  readonly refusedAllocs: number
}

export interface MuxPoolInfo {
  readonly pool: string
  readonly sessions: number
  readonly heldBytes: number
  readonly quota: number | undefined
  readonly weight: number
  /** Milliseconds of rpc-server compute time the pool's live and ended sessions got. */
  readonly computeMs: number
}

export interface MuxStats {
  readonly sessions: number
  /** Sessions dropped for breaking isolation. */
  readonly dropped: number
  readonly graphRestores: number
  readonly refusedAllocs: number
  /** Measured rpc-server compute time (ms) per pool, ended sessions included. */
  readonly computeMs: Readonly<Record<string, number>>
  /** Compute time of the multiplexer's own commands (clearing buffers, freeing, probes). */
  readonly internalComputeMs: number
}

export interface AttachOptions {
  readonly pool?: string | undefined
  /** The pool's weight in sharing compute time (default 1); the pool's latest session sets it. */
  readonly weight?: number | undefined
  /** For logs: where the session comes from. */
  readonly label?: string | undefined
}

export interface RpcMux {
  readonly version: RpcVersion
  readonly deviceCount: number
  /** Serves one RPC client on `socket` (a llama-server's TCP connection or a tunnel stream). */
  attach(socket: Duplex, options?: AttachOptions): Promise<MuxSessionEnd>
  sessions(): MuxSessionInfo[]
  pools(): MuxPoolInfo[]
  /** Totals since the start, ended sessions included. */
  stats(): MuxStats
  /** Resolves when the upstream connection ends, with the reason if it failed. */
  readonly closed: Promise<Error | undefined>
  close(): void
}
