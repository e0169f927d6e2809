import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import {
  CONN_CAPS_SIZE,
  PendingResponses,
  RESPONSE_HEADER_SIZE,
  RPC_PROTOCOL_VERSION,
  RpcCommand,
  RpcProtocolError,
  RpcResponseParser,
  encodeRequest,
  encodeResponse,
  type ExpectedResponse,
  type RpcResponseFrame,
  type RpcVersion
} from '@frankenstein-mesh/llama'
import type { Logger } from 'pino'
import { RpcIsolationError, RpcMuxError } from './errors.ts'
import { MuxSession, type QueuedCommand } from './mux-session.ts'
import { fairShare, type MuxScheduler } from './mux-scheduler.ts'
import { ComputeMeter } from './mux-compute-meter.ts'
import { deviceMemoryWithin } from './mux-quota.ts'
import { MAX_GRAPH_BYTES } from './rpc-isolation.ts'
import type {
  AttachOptions,
  MuxPoolInfo,
  MuxSessionEnd,
  MuxSessionInfo,
  MuxStats,
  RpcMux,
  RpcMuxInit
} from './mux-types.ts'

const DEFAULT_PIECE = 1024 * 1024
const DEFAULT_MAX_UNREAD = 256 * 1024 * 1024
/**
 * Request bytes that may be on their way to rpc-server before the multiplexer waits for a reply:
 * beyond the scheduler, sockets would queue megabytes of one pool's upload ahead of the others.
 */
const UPSTREAM_WINDOW = 2 * 1024 * 1024

/** Whom an upstream response belongs to: a session, or the multiplexer itself. */
type Owner = { readonly session: MuxSession } | { readonly internal: (payload: Uint8Array) => void }

interface Outgoing {
  readonly frame: Uint8Array
  readonly response: ExpectedResponse | null
  readonly owner: Owner | null
  readonly onSent?: (() => void) | undefined
}

/**
 * The one client of an rpc-server, serving many RPC sessions over one upstream connection at
 * command boundaries. Responses come back in command order, and each session has at most one
 * response-bearing command forwarded at a time, so one FIFO of owners matches them.
 */
export async function startRpcMux(init: RpcMuxInit): Promise<RpcMux> {
  const mux = new Multiplexer(init)
  try {
    await mux.start(init.timeoutMs ?? 5_000)
  } catch (err) {
    // rpc-server serves one client at a time: a connection we gave up on must not keep it.
    mux.close()
    throw err
  }
  return mux
}

class Multiplexer implements RpcMux {
  version: RpcVersion = RPC_PROTOCOL_VERSION
  deviceCount = 0
  readonly closed: Promise<Error | undefined>
  private readonly init: RpcMuxInit
  private readonly log: Logger
  private readonly upstream: Socket
  private readonly pending = new PendingResponses()
  private readonly owners: Owner[] = []
  private readonly responses: RpcResponseParser
  private readonly internal: Outgoing[] = []
  private readonly live = new Map<number, { session: MuxSession; end: (end: MuxSessionEnd) => void }>()
  private readonly scheduler: MuxScheduler
  private readonly meter = new ComputeMeter()
  /** Compute time (ms) rpc-server spent per pool, ended sessions included; '' key: none. */
  private readonly computeMs = new Map<string | null, number>()
  private holdTimer: NodeJS.Timeout | undefined
  /** Weights pools attached with. */
  private readonly weights = new Map<string, number>()
  private probing = false
  /** Which session's graph rpc-server holds now, per device. */
  private readonly graphOwner = new Map<number, MuxSession>()
  private nextId = 1
  private readonly totals = { dropped: 0, graphRestores: 0, refusedAllocs: 0 }
  private blocked = false
  private failure: Error | null = null
  /** The session a streaming GET_TENSOR reply is going to, and how much of it is left. */
  private body: { session: MuxSession; left: number } | null = null
  private resolveClosed: (error: Error | undefined) => void = () => {}

  constructor(init: RpcMuxInit) {
    this.init = init
    this.log = init.logger.child({ component: 'rpc-mux' })
    this.scheduler = init.scheduler ?? fairShare({ weight: (pool) => this.weightOf(pool) })
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve))
    this.upstream = connect({ host: '127.0.0.1', port: init.upstreamPort, noDelay: true })
    this.responses = new RpcResponseParser({
      pending: this.pending,
      onFrame: (frame) => this.onResponse(frame),
      onBody: (bytes) => this.onResponseBody(bytes)
    })
    this.upstream.on('data', (chunk: Buffer) => {
      try {
        this.responses.push(chunk)
      } catch (err) {
        this.fail(
          new RpcMuxError('ERR_MUX_UPSTREAM_PROTOCOL', 'rpc-server broke the protocol', { cause: err })
        )
      }
    })
    this.upstream.on('drain', () => {
      this.blocked = false
      this.pump()
    })
    this.upstream.on('error', (err) =>
      this.fail(
        new RpcMuxError('ERR_MUX_UPSTREAM_CLOSED', `rpc-server connection failed: ${err.message}`, {
          cause: err
        })
      )
    )
    this.upstream.on('close', () =>
      this.fail(new RpcMuxError('ERR_MUX_UPSTREAM_CLOSED', 'rpc-server closed the connection'))
    )
  }

  /** Our own HELLO (transport caps zeroed: no RDMA behind the multiplexer) and DEVICE_COUNT. */
  async start(timeoutMs: number): Promise<void> {
    const ask = (command: RpcCommand, payload: Uint8Array, size: number): Promise<Uint8Array> =>
      new Promise((resolve) => this.sendInternal(encodeRequest(command, payload), { command, size }, resolve))
    const timeout = AbortSignal.timeout(timeoutMs)
    const hello = await until(
      ask(RpcCommand.Hello, new Uint8Array(CONN_CAPS_SIZE), 4 + CONN_CAPS_SIZE),
      timeout,
      this.closed
    )
    this.version = { major: hello[0] ?? 0, minor: hello[1] ?? 0, patch: hello[2] ?? 0 }
    if (this.version.major !== RPC_PROTOCOL_VERSION.major) {
      this.close()
      throw new RpcMuxError('ERR_MUX_UPSTREAM_VERSION', `rpc-server speaks protocol ${this.version.major}.x`)
    }
    const count = await until(ask(RpcCommand.DeviceCount, new Uint8Array(0), 4), timeout, this.closed)
    this.deviceCount = Buffer.from(count).readUInt32LE(0)
    this.log.info({ version: this.version, devices: this.deviceCount }, 'rpc-server multiplexed')
  }

  attach(socket: Duplex, options: AttachOptions = {}): Promise<MuxSessionEnd> {
    const id = this.nextId++
    const session = new MuxSession({
      id,
      pool: options.pool ?? '',
      label: options.label ?? '',
      socket,
      deviceCount: this.deviceCount,
      version: this.version,
      pieceSize: this.init.pieceSize ?? DEFAULT_PIECE,
      maxGraphBytes: this.init.maxGraphBytes ?? MAX_GRAPH_BYTES,
      onQueued: () => this.pump()
    })
    const { promise, resolve } = Promise.withResolvers<MuxSessionEnd>()
    if (this.failure !== null) {
      socket.destroy()
      resolve({ id, error: this.failure })
      return promise
    }
    this.live.set(id, { session, end: resolve })
    if (options.weight !== undefined) this.weights.set(session.pool, options.weight)
    socket.on('data', (chunk: Buffer) => {
      if (session.closed) return
      try {
        session.push(chunk)
      } catch (err) {
        this.drop(session, err instanceof Error ? err : new Error(String(err)))
      }
    })
    socket.on('error', (err) => this.drop(session, err))
    socket.on('close', () => this.drop(session, undefined))
    socket.on('end', () => this.drop(session, undefined))
    return promise
  }

  sessions(): MuxSessionInfo[] {
    return [...this.live.values()].map(({ session: s }) => ({
      id: s.id,
      pool: s.pool,
      label: s.label,
      buffers: [...s.buffers].map(([ptr, range]) => ({ ptr, ...range })),
      heldBytes: s.heldBytes,
      queuedBytes: s.queuedBytes,
      commands: s.counters.commands,
      uploadBytes: s.counters.uploadBytes,
      graphRestores: s.counters.graphRestores,
      refusedAllocs: s.counters.refusedAllocs
    }))
  }

  stats(): MuxStats {
    const computeMs: Record<string, number> = {}
    for (const [pool, ms] of this.computeMs) if (pool !== null) computeMs[pool] = ms
    return {
      sessions: this.nextId - 1,
      ...this.totals,
      computeMs,
      internalComputeMs: this.computeMs.get(null) ?? 0
    }
  }

  pools(): MuxPoolInfo[] {
    const pools = new Map<string, number>()
    for (const { session } of this.live.values()) pools.set(session.pool, (pools.get(session.pool) ?? 0) + 1)
    return [...pools].map(([pool, sessions]) => ({
      pool,
      sessions,
      heldBytes: this.used(pool),
      quota: this.init.quota?.(pool),
      weight: this.weightOf(pool),
      computeMs: this.computeMs.get(pool) ?? 0
    }))
  }

  private weightOf(pool: string): number {
    return this.init.weight?.(pool) ?? this.weights.get(pool) ?? 1
  }

  /** Bytes a pool holds in rpc-server, with its allocations under way. */
  private used(pool: string): number {
    let sum = 0
    for (const { session } of this.live.values())
      if (session.pool === pool) sum += session.heldBytes + session.reserved
    return sum
  }

  close(): void {
    this.fail(new RpcMuxError('ERR_MUX_CLOSED', 'multiplexer closed'), false)
  }

  /** Ends one session, however it ended, and frees upstream whatever rpc-server holds for it. */
  private drop(session: MuxSession, error: Error | undefined): void {
    if (session.closed) return
    session.close()
    session.socket.destroy()
    for (const [device, owner] of this.graphOwner) if (owner === session) this.graphOwner.delete(device)
    for (const ptr of session.held.keys()) this.sendInternal(encodeRequest(RpcCommand.FreeBuffer, u64(ptr)))
    const freed = session.heldBytes
    session.held.clear()
    const entry = this.live.get(session.id)
    this.live.delete(session.id)
    const fields = { session: session.id, pool: session.pool, label: session.label, freedBytes: freed }
    if (error instanceof RpcIsolationError || error instanceof RpcProtocolError) {
      this.totals.dropped++
      this.log.warn({ ...fields, code: error.code, err: error.message }, 'rpc session dropped')
    } else this.log.debug({ ...fields, err: error?.message }, 'rpc session ended')
    entry?.end({ id: session.id, error })
    this.pump()
  }

  private fail(error: RpcMuxError, log = true): void {
    if (this.failure !== null) return
    this.failure = error
    if (log) this.log.error({ code: error.code, err: error.message }, 'rpc-server connection lost')
    for (const { session } of [...this.live.values()]) this.drop(session, error)
    clearTimeout(this.holdTimer)
    this.upstream.destroy()
    this.resolveClosed(error)
  }

  private sendInternal(
    frame: Uint8Array,
    response: ExpectedResponse | null = null,
    onReply?: (payload: Uint8Array) => void
  ): void {
    this.internal.push({ frame, response, owner: onReply === undefined ? null : { internal: onReply } })
    this.pump()
  }

  /** Forwards whole commands until the upstream socket is full or nothing is ready. */
  private pump(): void {
    while (!this.blocked && this.failure === null) {
      const next = this.nextOutgoing()
      if (next === undefined) {
        if (this.meter.unmeasured) this.probeSoon()
        return
      }
      if (next === null) continue
      if (next.response !== null && next.owner !== null) {
        this.pending.push(next.response)
        this.owners.push(next.owner)
      }
      this.metered(next)
      next.onSent?.()
      if (!this.upstream.write(next.frame)) this.blocked = true
    }
  }

  /** The scheduler's pick among sessions not awaiting a reply; null when it was answered locally. */
  private fromSessions(): Outgoing | null | undefined {
    const ready = [...this.live.values()]
      .map((l) => l.session)
      .filter((s) => !s.awaiting && s.queue.length > 0)
    if (ready.length === 0) return undefined
    const inFlight = [...this.live.values()].map((l) => l.session).filter((s) => s.awaiting)
    const session = this.scheduler.pick(ready, inFlight)
    if (session === undefined) {
      this.holdTimer ??= setTimeout(() => {
        this.holdTimer = undefined
        this.pump()
      }, this.scheduler.holdMs ?? 1).unref()
      return undefined
    }
    const item = session.take() as QueuedCommand
    if (item.kind === 'local') {
      this.reply(session, item.reply)
      return null
    }
    if (item.kind === 'recompute') return this.recompute(session, item)
    if (item.command === RpcCommand.AllocBuffer && !this.withinQuota(session, item.frame)) {
      session.counters.refusedAllocs++
      this.totals.refusedAllocs++
      this.reply(session, encodeResponse(new Uint8Array(16)))
      return null
    }
    if (item.command === RpcCommand.GraphCompute) {
      const device = Buffer.from(item.frame.buffer, item.frame.byteOffset).readUInt32LE(9)
      this.graphOwner.set(device, session)
    }
    if (item.response !== null) session.awaiting = true
    return { frame: item.frame, response: item.response, owner: { session }, onSent: item.onSent }
  }

  /** An allocation the pool's quota allows is reserved until its reply; one past it is refused. */
  private withinQuota(session: MuxSession, frame: Uint8Array): boolean {
    const size = Number(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).readBigUInt64LE(9 + 4))
    const quota = this.init.quota?.(session.pool)
    if (quota !== undefined && this.used(session.pool) + size > quota) {
      this.log.debug({ session: session.id, pool: session.pool, size, quota }, 'allocation over quota')
      return false
    }
    session.reserved = size
    return true
  }

  /** rpc-server recomputes the last graph it got: another session's, unless we restore ours first. */
  private recompute(session: MuxSession, item: Extract<QueuedCommand, { kind: 'recompute' }>): Outgoing {
    const ours = this.graphOwner.get(item.device) === session
    this.graphOwner.set(item.device, session)
    if (!ours) {
      session.counters.graphRestores++
      this.totals.graphRestores++
    }
    return { frame: ours ? item.frame : item.graph.frame, response: null, owner: { session } }
  }

  /** Charges the scheduler an estimate of a forwarded command's compute time. */
  private metered(next: Outgoing): void {
    const pool = next.owner !== null && 'session' in next.owner ? next.owner.session.pool : null
    const command = next.frame[0] ?? 0
    const estimate = this.meter.forwarded(pool, command, next.frame.length, next.response !== null, now())
    if (pool !== null) this.scheduler.charge?.(pool, estimate)
  }

  /** The multiplexer's own commands first; with too much on its way upstream, a probe and a wait. */
  private nextOutgoing(): Outgoing | null | undefined {
    const internal = this.internal.shift()
    if (internal !== undefined) return internal
    if (this.meter.unmeasuredBytes < UPSTREAM_WINDOW) return this.fromSessions()
    return this.meter.unmeasured ? probe(() => this.pump()) : undefined
  }

  /**
   * Commands without a reply were sent last and nothing followed within this turn of the event
   * loop: a DEVICE_COUNT after them tells when rpc-server is done with them, so that their time
   * is not mixed with idle time or with later commands.
   */
  private probeSoon(): void {
    if (this.probing) return
    this.probing = true
    setImmediate(() => {
      this.probing = false
      if (!this.meter.unmeasured || this.failure !== null) return
      this.internal.push(probe(() => this.pump()))
      this.pump()
    })
  }

  /** A reply arrived: the measured compute time of the commands it closes corrects their estimates. */
  private measured(): void {
    for (const { pool, ms, estimateMs } of this.meter.replied(now())) {
      this.computeMs.set(pool, (this.computeMs.get(pool) ?? 0) + ms)
      if (pool !== null) this.scheduler.charge?.(pool, ms - estimateMs)
    }
  }

  private onResponse(frame: RpcResponseFrame): void {
    this.measured()
    const owner = this.owners.shift() as Owner
    const payload = frame.bytes.subarray(RESPONSE_HEADER_SIZE)
    if ('internal' in owner) {
      owner.internal(payload)
      return
    }
    const { session } = owner
    if (frame.command === RpcCommand.AllocBuffer) {
      session.reserved = 0
      this.allocated(session, frame.bytes.slice())
      return
    }
    if (frame.command === RpcCommand.GetDeviceMemory) {
      this.reply(
        session,
        deviceMemoryWithin(frame.bytes.slice(), this.init.quota?.(session.pool), this.used(session.pool))
      )
      return
    }
    if (frame.command === RpcCommand.GetTensor && frame.payloadSize > 0) {
      this.body = { session, left: frame.payloadSize }
      this.reply(session, frame.bytes, false)
      return
    }
    this.reply(session, frame.bytes)
  }

  private onResponseBody(bytes: Uint8Array): void {
    const body = this.body as NonNullable<typeof this.body>
    body.left -= bytes.length
    this.reply(body.session, bytes, body.left === 0)
    if (body.left === 0) this.body = null
  }

  /**
   * A new buffer: cleared before anyone reads it (rpc-server hands out reused memory), its base
   * learnt for the bounds checks; only then does the session get the reply. A closed session's
   * buffer is freed at once.
   */
  private allocated(session: MuxSession, reply: Uint8Array): void {
    const view = Buffer.from(reply.buffer, reply.byteOffset, reply.byteLength)
    const ptr = view.readBigUInt64LE(RESPONSE_HEADER_SIZE)
    const size = view.readBigUInt64LE(RESPONSE_HEADER_SIZE + 8)
    if (ptr === 0n) {
      this.reply(session, reply)
      return
    }
    if (session.closed) {
      this.sendInternal(encodeRequest(RpcCommand.FreeBuffer, u64(ptr)))
      return
    }
    session.held.set(ptr, size)
    this.sendInternal(encodeRequest(RpcCommand.BufferClear, Buffer.concat([u64(ptr), Buffer.from([0])])))
    this.sendInternal(
      encodeRequest(RpcCommand.BufferGetBase, u64(ptr)),
      { command: RpcCommand.BufferGetBase, size: 8 },
      (base) => {
        if (session.closed) return
        session.buffers.set(ptr, { base: Buffer.from(base).readBigUInt64LE(0), size })
        this.reply(session, reply)
      }
    )
  }

  /** Writes a reply (or part of one) to a session; `done` ends its wait for it. */
  private reply(session: MuxSession, bytes: Uint8Array, done = true): void {
    if (session.closed) return
    session.counters.responseBytes += bytes.length
    session.socket.write(bytes)
    if (session.socket.writableLength > (this.init.maxUnreadBytes ?? DEFAULT_MAX_UNREAD)) {
      this.drop(
        session,
        new RpcIsolationError('ERR_MUX_SLOW_READER', 'the session does not read its replies')
      )
      return
    }
    if (done) {
      session.awaiting = false
      this.pump()
    }
  }
}

const now = (): number => performance.now()

/**
 * A DEVICE_COUNT whose reply marks when rpc-server finished what was sent before it; `then` goes
 * on forwarding, which a full window may have stopped.
 */
function probe(then: () => void): Outgoing {
  return {
    frame: encodeRequest(RpcCommand.DeviceCount, new Uint8Array(0)),
    response: { command: RpcCommand.DeviceCount, size: 4 },
    owner: { internal: then }
  }
}

function u64(n: bigint): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(n)
  return b
}

async function until<T>(
  work: Promise<T>,
  timeout: AbortSignal,
  closed: Promise<Error | undefined>
): Promise<T> {
  const { promise, reject } = Promise.withResolvers<never>()
  const onAbort = (): void =>
    reject(new RpcMuxError('ERR_MUX_UPSTREAM_TIMEOUT', 'rpc-server did not answer in time'))
  timeout.addEventListener('abort', onAbort, { once: true })
  void closed.then((err) => reject(err ?? new RpcMuxError('ERR_MUX_UPSTREAM_CLOSED', 'rpc-server closed')))
  try {
    return await Promise.race([work, promise])
  } finally {
    timeout.removeEventListener('abort', onAbort)
  }
}
