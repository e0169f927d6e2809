import { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Connection, Stream } from '@libp2p/interface'
import { messageChannel, type MeshNode, type MessageChannel } from '@frankenstein-mesh/mesh'
import {
  MAX_LEASE_MESSAGE_BYTES,
  OrchestratorLeaseMessage,
  PROTOCOL,
  type AgentLeaseMessage,
  type LeaseEndReason,
  type RefusalReason
} from '@frankenstein-mesh/protocol'
import type { Logger } from 'pino'
import type { LeasePolicy } from './lease-policy.ts'
import type { Lease, SchedulerAction } from './lease-scheduler.ts'
import type { Verdict } from './memberships.ts'
import type { Countersignature, LeaseBook, ReceiptClerk } from './receipts.ts'

export interface LeaseServiceInit {
  readonly node: MeshNode
  readonly scheduler: LeasePolicy
  readonly logger: Logger
  /** Tells the holder to renew this often (the scheduler's lease TTL). */
  readonly ttlMs: number
  readonly minSliceMs: number
  readonly tickMs?: number | undefined
  /** Whether a peer may act for a pool, from the credential it presents. */
  readonly authorize: (pool: string, credential: string | undefined, peer: string) => Promise<Verdict>
  /** Credit: receipts for each lease, every `intervalMs` while held and when it ends. */
  readonly receipts?: { readonly clerk: ReceiptClerk; readonly intervalMs: number } | undefined
}

/** How long a proposed receipt waits for the orchestrator's countersignature. */
const RECEIPT_ANSWER_MS = 10_000

export interface LeaseServiceEvents {
  /** A lease is over: its holder's RPC streams must close, so rpc-server frees its buffers. */
  ended: [lease: Lease, peer: string]
}

/** One orchestrator's lease conversation: waiting in line, or holding the worker. */
interface Session {
  readonly peer: string
  readonly pool: string
  readonly channel: MessageChannel<OrchestratorLeaseMessage>
  /** Serial of the credential it proved its authority with: a revocation names it. */
  readonly serial: number
  /** Bytes its plan places on this worker, as its request said. */
  readonly memory?: number | undefined
  lease?: Lease | undefined
  book?: LeaseBook | undefined
  receiptTimer?: NodeJS.Timeout | undefined
  /** Receipts are proposed one at a time, in order. */
  exchanging?: Promise<void> | undefined
  readonly answers: Map<number, (answer: Countersignature) => void>
}

/** Refused lease requests allowed per peer and minute before it is refused without a look. */
const REFUSALS_PER_MINUTE = 5

/**
 * The agent's side of `/frankenstein/lease/1.0.0`: turns lease requests into scheduler calls and
 * scheduler actions into messages (grant, revoke with a deadline, end), and tells which peer may
 * use rpc-server right now.
 */
export class LeaseService extends EventEmitter<LeaseServiceEvents> {
  private readonly init: LeaseServiceInit
  private readonly log: Logger
  private readonly sessions = new Set<Session>()
  private readonly refusals = new Map<string, number[]>()
  private readonly exchanges = new Set<Promise<void>>()
  /** The pool each peer last held a lease for: RPC traffic is booked to it. */
  private readonly pools = new Map<string, string>()
  private timer: NodeJS.Timeout | undefined

  constructor(init: LeaseServiceInit) {
    super()
    this.init = init
    this.log = init.logger.child({ component: 'lease-service' })
  }

  /** Whether a peer's RPC streams may reach rpc-server now: it holds a lease. */
  holds(peer: string): boolean {
    return this.holderSessions().some((s) => s.peer === peer)
  }

  /** The (first) lease holder: with exclusive sharing, the only one. */
  get holder(): { pool: string; peer: string; lease: Lease } | undefined {
    return this.holders[0]
  }

  /** Every lease holder: several at once with concurrent sharing. */
  get holders(): Array<{ pool: string; peer: string; lease: Lease }> {
    return this.holderSessions().flatMap((s) =>
      s.lease === undefined ? [] : [{ pool: s.pool, peer: s.peer, lease: s.lease }]
    )
  }

  poolOf(peer: string): string | undefined {
    return this.pools.get(peer)
  }

  /** Sessions waiting in line, by pool. */
  get waiting(): string[] {
    return [...this.sessions].filter((s) => s.lease === undefined).map((s) => s.pool)
  }

  async start(): Promise<void> {
    await this.init.node.handle(PROTOCOL.lease, (stream, connection) => void this.serve(stream, connection), {
      runOnLimitedConnection: true,
      maxInboundStreams: 8
    })
    this.timer = setInterval(() => this.apply(this.init.scheduler.tick()), this.init.tickMs ?? 1_000)
  }

  /**
   * Leaving: waiting sessions are refused; the holder is revoked with `noticeMs` to drain and
   * release (bounded: after that its lease ends regardless). Then nothing is answered any more.
   */
  async stop(noticeMs = 0): Promise<void> {
    clearInterval(this.timer)
    await this.init.node.unhandle(PROTOCOL.lease)
    for (const session of [...this.sessions]) {
      if (session.lease !== undefined) continue
      this.sessions.delete(session)
      await this.tell(session, { type: 'refused', version: 1, reason: 'agent-leaving' })
      await session.channel.close()
    }
    const holders = this.holderSessions()
    if (holders.length > 0 && noticeMs > 0) {
      const deadline = Date.now() + noticeMs
      for (const holder of holders)
        if (holder.lease !== undefined)
          await this.tell(holder, {
            type: 'revoke',
            version: 1,
            leaseId: holder.lease.id,
            revokeBy: deadline
          })
      while (this.holderSessions().length > 0 && Date.now() < deadline) await sleep(50)
    }
    for (const session of [...this.sessions]) {
      if (session.lease !== undefined) this.init.scheduler.release(session.lease.id)
      await this.endSession(session, 'agent-leaving')
    }
    this.sessions.clear()
    // A holder that released just before: its last receipt is still being settled.
    await Promise.all(this.exchanges)
  }

  /** rpc-server died or came back: every holder hears of it. */
  rpcServerState(state: 'lost' | 'restored'): void {
    for (const session of this.sessions)
      if (session.lease !== undefined) void this.tell(session, { type: 'rpc-server', version: 1, state })
  }

  private async serve(stream: Stream, connection: Connection): Promise<void> {
    const channel = messageChannel(stream, OrchestratorLeaseMessage, MAX_LEASE_MESSAGE_BYTES)
    const peer = connection.remotePeer.toString()
    let session: Session | undefined
    try {
      // The request is read (size-bounded) even when refused unseen: closing before the dialer's
      // protocol negotiation has settled breaks its stream instead of telling it why.
      const first = await channel.receive(AbortSignal.timeout(10_000))
      if (this.rateLimited(peer)) {
        await this.refuse(channel, peer, 'rate-limited', 'too many refused requests')
        return
      }
      if (first.type !== 'request') throw new Error('a lease session starts with a request')
      const verdict = await this.init.authorize(first.pool, first.credential, peer)
      if (!verdict.ok) {
        this.refusals.set(peer, [...(this.refusals.get(peer) ?? []), Date.now()])
        await this.refuse(channel, peer, verdict.reason, verdict.message)
        return
      }
      session = {
        peer,
        pool: first.pool,
        channel,
        serial: verdict.serial,
        memory: first.memory,
        answers: new Map()
      }
      this.sessions.add(session)
      await this.ask(session)
      while (true) this.handle(session, await channel.receive())
    } catch (err) {
      this.log.debug({ peer, err: (err as Error).message }, 'lease session closed')
    } finally {
      if (session !== undefined) this.forget(session)
      stream.abort(new Error('lease session over'))
    }
  }

  /** The owner withdrew these credentials: their sessions end now, leases and RPC streams included. */
  revoke(pool: string, serials: ReadonlySet<number>): void {
    for (const session of [...this.sessions]) {
      if (session.pool !== pool || !serials.has(session.serial)) continue
      if (session.lease !== undefined) {
        const actions = this.init.scheduler.release(session.lease.id)
        void this.endSession(session, 'revoked')
        this.apply(actions)
      } else {
        this.sessions.delete(session)
        void this.tell(session, { type: 'refused', version: 1, reason: 'revoked' }).then(() =>
          session.channel.close()
        )
      }
    }
  }

  private rateLimited(peer: string): boolean {
    const recent = (this.refusals.get(peer) ?? []).filter((t) => Date.now() - t < 60_000)
    this.refusals.set(peer, recent)
    return recent.length >= REFUSALS_PER_MINUTE
  }

  private async refuse(
    channel: MessageChannel<OrchestratorLeaseMessage>,
    peer: string,
    reason: RefusalReason,
    message: string
  ): Promise<void> {
    this.log.warn({ peer, reason, message }, 'lease refused')
    await channel.send({ type: 'refused', version: 1, reason } satisfies AgentLeaseMessage).catch(() => {})
    await channel.close()
  }

  private async ask(session: Session): Promise<void> {
    const answer = this.init.scheduler.request(session.pool, session.memory)
    if (answer.granted && !this.blocked(session.pool)) {
      await this.grant(session, answer.lease)
      return
    }
    if (!answer.granted && answer.reason === 'unknown-pool') {
      await this.tell(session, { type: 'refused', version: 1, reason: 'unknown-pool' })
      throw new Error(`unknown pool ${session.pool}`)
    }
    const holder = this.holderSessions().find((s) => this.sharesOut(s, session.pool))
    const freeAt = answer.granted ? Date.now() + this.init.minSliceMs : answer.freeAt
    await this.tell(session, { type: 'busy', version: 1, holder: holder?.pool ?? session.pool, freeAt })
  }

  private handle(session: Session, message: OrchestratorLeaseMessage): void {
    if (message.type === 'renew' && session.lease?.id === message.leaseId)
      this.init.scheduler.renew(message.leaseId)
    if (message.type === 'receipt-signed' || message.type === 'receipt-disputed') {
      session.answers.get(message.seq)?.(
        message.type === 'receipt-signed'
          ? { type: message.type, signature: message.signature }
          : { type: message.type, reason: message.reason }
      )
      return
    }
    if (message.type === 'release' && session.lease?.id === message.leaseId) {
      const actions = this.init.scheduler.release(message.leaseId)
      void this.endSession(session, 'released')
      this.apply(actions)
    }
  }

  private apply(actions: SchedulerAction[]): void {
    this.applyEach(actions)
    // A session may be in line without the scheduler knowing (it asked while its own pool held
    // the worker): once the worker is free, it asks again.
    const waiting = [...this.sessions].find(
      (s) => s.lease === undefined && !this.blocked(s.pool) && this.init.scheduler.free(s.pool)
    )
    if (waiting !== undefined) void this.ask(waiting)
  }

  private applyEach(actions: SchedulerAction[]): void {
    for (const action of actions) {
      if (action.type === 'grant') {
        const next = [...this.sessions].find((s) => s.pool === action.lease.pool && s.lease === undefined)
        if (next === undefined) this.applyEach(this.init.scheduler.release(action.lease.id))
        else void this.grant(next, action.lease)
      } else {
        const session = [...this.sessions].find((s) => s.lease?.id === action.lease.id)
        if (session === undefined) continue
        if (action.type === 'revoke')
          void this.tell(session, {
            type: 'revoke',
            version: 1,
            leaseId: action.lease.id,
            revokeBy: action.revokeBy
          })
        else void this.endSession(session, action.reason)
      }
    }
  }

  private async grant(session: Session, lease: Lease): Promise<void> {
    session.lease = lease
    this.pools.set(session.peer, session.pool)
    const receipts = this.init.receipts
    if (receipts !== undefined) {
      session.book = receipts.clerk.open(session.pool, session.peer, lease.id)
      clearInterval(session.receiptTimer)
      session.receiptTimer = setInterval(() => void this.exchange(session), receipts.intervalMs)
      session.receiptTimer.unref()
    }
    this.log.info({ pool: session.pool, peer: session.peer, lease: lease.id }, 'lease granted')
    const info = {
      id: lease.id,
      pool: lease.pool,
      grantedAt: lease.grantedAt,
      ttlMs: this.init.ttlMs,
      minSliceMs: this.init.minSliceMs,
      sharing: lease.sharing ?? 'exclusive',
      ...(lease.quotaBytes === undefined ? {} : { quotaBytes: lease.quotaBytes })
    }
    await this.tell(session, { type: 'granted', version: 1, lease: info })
  }

  private async endSession(session: Session, reason: LeaseEndReason): Promise<void> {
    const lease = session.lease
    if (lease === undefined) return
    session.lease = undefined
    this.sessions.delete(session)
    this.log.info({ pool: session.pool, peer: session.peer, lease: lease.id, reason }, 'lease ended')
    clearInterval(session.receiptTimer)
    this.emit('ended', lease, session.peer)
    // The last period's receipt, once the holder's RPC connections have closed, before "ended".
    await this.exchange(session, true)
    await this.tell(session, { type: 'ended', version: 1, leaseId: lease.id, reason })
    await session.channel.close()
  }

  /** The orchestrator went away: a held lease ends now, a waiting one leaves the line. */
  private forget(session: Session): void {
    clearInterval(session.receiptTimer)
    if (!this.sessions.delete(session)) return
    if (session.lease !== undefined) {
      this.emit('ended', session.lease, session.peer)
      this.apply(this.init.scheduler.release(session.lease.id))
    } else if (![...this.sessions].some((s) => s.pool === session.pool)) {
      this.init.scheduler.withdraw(session.pool)
    }
  }

  /**
   * Proposes the receipt for the period since the last one and records it once countersigned.
   * An orchestrator that does not answer gets no receipt recorded for that period: never half one.
   */
  private async exchange(session: Session, final = false): Promise<void> {
    const clerk = this.init.receipts?.clerk
    const book = session.book
    if (clerk === undefined || book === undefined) return
    const run = async (): Promise<void> => {
      if (final) await clerk.quiesce(session.peer, 3_000)
      const proposal = await clerk.propose(book)
      if (proposal === undefined) return
      const answer = new Promise<Countersignature | undefined>((resolve) => {
        const timer = setTimeout(() => {
          session.answers.delete(proposal.seq)
          resolve(undefined)
        }, RECEIPT_ANSWER_MS)
        session.answers.set(proposal.seq, (a) => {
          clearTimeout(timer)
          session.answers.delete(proposal.seq)
          resolve(a)
        })
      })
      await this.tell(session, {
        type: 'receipt',
        version: 1,
        receipt: proposal.text,
        signature: proposal.signature
      })
      await clerk.settle(book, proposal, await answer)
    }
    const exchanging = (session.exchanging ?? Promise.resolve()).then(run).catch((err: unknown) => {
      this.log.warn({ peer: session.peer, err: (err as Error).message }, 'receipt exchange failed')
    })
    session.exchanging = exchanging
    this.exchanges.add(exchanging)
    await exchanging
    this.exchanges.delete(exchanging)
  }

  private holderSessions(): Session[] {
    return [...this.sessions].filter((s) => s.lease !== undefined)
  }

  /** Whether a held lease keeps `pool` out: any, with exclusive sharing; its own pool's, with concurrent. */
  private blocked(pool: string): boolean {
    return this.holderSessions().some((s) => this.sharesOut(s, pool))
  }

  private sharesOut(holder: Session, pool: string): boolean {
    return holder.lease?.sharing !== 'concurrent' || holder.pool === pool
  }

  private async tell(session: Session, message: AgentLeaseMessage): Promise<void> {
    await session.channel.send(message).catch((err: unknown) => {
      this.log.debug({ peer: session.peer, err: (err as Error).message }, 'cannot reach lease holder')
    })
  }
}
