import {
  NO_FIGURES,
  creditFor,
  deltaOf,
  figuresOf,
  receiptText,
  signReceipt,
  type Ledger
} from '@frankenstein-mesh/credits'
import type { Figures } from '@frankenstein-mesh/protocol'
import type { RpcTraffic } from '@frankenstein-mesh/tunnel'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'

const add = (a: Figures, b: Figures): Figures => ({
  memoryGiBs: a.memoryGiBs + b.memoryGiBs,
  computeMs: a.computeMs + b.computeMs,
  loadedBytes: a.loadedBytes + b.loadedBytes,
  computes: a.computes + b.computes
})

/** One lease's receipts so far: where its totals start, and what was last claimed. */
export interface LeaseBook {
  readonly pool: string
  readonly peer: string
  readonly lease: number
  readonly baseline: Figures
  seq: number
  from: number
  last: Figures | undefined
}

export interface Proposal {
  readonly seq: number
  readonly text: string
  readonly signature: string
}

export type Countersignature =
  | { readonly type: 'receipt-signed'; readonly signature: string }
  | { readonly type: 'receipt-disputed'; readonly reason: string }

/**
 * The worker's side of credit: it meters each lease holder's RPC connections (those ended and
 * those still open), proposes signed receipts for periods of a lease, and records those the
 * orchestrator countersigned in the ledger. Disputes are logged and counted, never resolved.
 */
export class ReceiptClerk {
  private readonly ended = new Map<string, Figures>()
  private readonly init: {
    key: PrivateKey
    self: string
    ledger: Ledger
    live: (peer: string) => readonly RpcTraffic[]
    logger: Logger
  }
  private readonly log: Logger
  disputes = 0
  recorded = 0

  constructor(init: ReceiptClerk['init']) {
    this.init = init
    this.log = init.logger.child({ component: 'receipts' })
  }

  /** A connection of `peer` ended with these counters. */
  connectionEnded(peer: string, traffic: RpcTraffic): void {
    this.ended.set(peer, add(this.ended.get(peer) ?? NO_FIGURES, figuresOf([traffic])))
  }

  /** Everything `peer`'s connections have used, ended and live. */
  totalOf(peer: string): Figures {
    return add(this.ended.get(peer) ?? NO_FIGURES, figuresOf(this.init.live(peer)))
  }

  /** Waits (bounded) until `peer` has no RPC connection open: its counters are then final. */
  async quiesce(peer: string, ms: number): Promise<void> {
    const deadline = Date.now() + ms
    while (this.init.live(peer).length > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 25))
  }

  open(pool: string, peer: string, lease: number): LeaseBook {
    return { pool, peer, lease, baseline: this.totalOf(peer), seq: 0, from: Date.now(), last: undefined }
  }

  /** The receipt for the lease's period since the last one; undefined when nothing was used. */
  async propose(book: LeaseBook): Promise<Proposal | undefined> {
    const now = this.totalOf(book.peer)
    const total: Figures = {
      memoryGiBs: Math.max(0, now.memoryGiBs - book.baseline.memoryGiBs),
      computeMs: Math.max(0, now.computeMs - book.baseline.computeMs),
      loadedBytes: Math.max(0, now.loadedBytes - book.baseline.loadedBytes),
      computes: Math.max(0, now.computes - book.baseline.computes)
    }
    const delta = deltaOf(total, book.last)
    const credit = creditFor(delta)
    if (credit === 0) return undefined
    const to = Date.now()
    const text = receiptText({
      v: 1,
      type: 'receipt',
      pool: book.pool,
      lease: book.lease,
      seq: book.seq,
      worker: this.init.self,
      orchestrator: book.peer,
      from: book.from,
      to,
      total,
      delta,
      credit
    })
    const proposal = { seq: book.seq, text, signature: await signReceipt(this.init.key, text) }
    book.seq++
    book.from = to
    book.last = total
    return proposal
  }

  /** Records a countersigned receipt (verified first); logs a dispute or a silence. */
  async settle(book: LeaseBook, proposal: Proposal, answer: Countersignature | undefined): Promise<void> {
    const where = { pool: book.pool, peer: book.peer, lease: book.lease, seq: proposal.seq }
    if (answer === undefined) {
      this.log.warn(where, 'receipt not answered: not recorded')
      return
    }
    if (answer.type === 'receipt-disputed') {
      this.disputes++
      this.log.warn({ ...where, reason: answer.reason }, 'receipt disputed')
      return
    }
    try {
      await this.init.ledger.append({
        text: proposal.text,
        workerSignature: proposal.signature,
        orchestratorSignature: answer.signature
      })
      this.recorded++
      this.log.info(where, 'receipt recorded')
    } catch (err) {
      this.disputes++
      this.log.warn({ ...where, err: (err as Error).message }, 'countersigned receipt refused')
    }
  }
}
