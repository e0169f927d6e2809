import { disputeOf, readReceipt, signReceipt, signatureValid, type Ledger } from '@frankenstein-mesh/credits'
import type { ReceiptAnswer } from '@frankenstein-mesh/mesh'
import type { Figures, LeaseInfo } from '@frankenstein-mesh/protocol'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface OrchestratorCreditsInit {
  readonly key: PrivateKey
  /** Our peer id: receipts must name us. */
  readonly self: string
  readonly pool: string
  readonly ledger: Ledger
  readonly logger: Logger
}

/**
 * The orchestrator's side of credit: a worker's receipt is countersigned only when it is about
 * this pool, this lease, this worker and us, carries the worker's valid signature, and claims
 * totals within tolerance of what our own tunnel measured. It is recorded in our ledger before
 * the countersignature goes out, so whatever the worker holds, we hold too.
 */
export class OrchestratorCredits {
  private readonly init: OrchestratorCreditsInit
  private readonly log: Logger
  recorded = 0
  disputes = 0
  /** Credit of the receipts countersigned since start. */
  earned = 0

  constructor(init: OrchestratorCreditsInit) {
    this.init = init
    this.log = init.logger.child({ component: 'credits' })
  }

  get ledger(): Ledger {
    return this.init.ledger
  }

  async countersign(
    peer: string,
    text: string,
    workerSignature: string,
    lease: LeaseInfo,
    measured: Figures
  ): Promise<ReceiptAnswer> {
    const dispute = (reason: string): ReceiptAnswer => {
      this.disputes++
      this.log.warn({ peer, lease: lease.id, reason }, 'receipt disputed')
      return { dispute: reason }
    }
    let receipt
    try {
      receipt = readReceipt(text)
    } catch (err) {
      return dispute((err as Error).message)
    }
    if (receipt.worker !== peer) return dispute('the receipt names another worker')
    if (receipt.orchestrator !== this.init.self) return dispute('the receipt names another orchestrator')
    if (receipt.pool !== this.init.pool || receipt.lease !== lease.id)
      return dispute('the receipt is for another pool or lease')
    if (!(await signatureValid(peer, text, workerSignature)))
      return dispute("the worker's signature does not match")
    const disagreement = disputeOf(receipt.total, measured)
    if (disagreement !== undefined) return dispute(disagreement)
    const signature = await signReceipt(this.init.key, text)
    const { duplicate } = await this.init.ledger.append({
      text,
      workerSignature,
      orchestratorSignature: signature
    })
    this.recorded++
    // The ledger keeps a receipt once however often it is appended; so does this sum.
    if (!duplicate) this.earned += receipt.credit
    this.log.info(
      { peer, lease: lease.id, seq: receipt.seq, credit: receipt.credit },
      'receipt countersigned'
    )
    return { signature }
  }
}
