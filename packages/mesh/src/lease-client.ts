import type { Libp2p, PeerId } from '@libp2p/interface'
import {
  AgentLeaseMessage,
  MAX_LEASE_MESSAGE_BYTES,
  PROTOCOL,
  type LeaseEndReason,
  type LeaseInfo,
  type PoolName,
  type RefusalReason
} from '@frankenstein-mesh/protocol'
import type { Logger } from 'pino'
import { MeshError } from './errors.ts'
import { messageChannel, type MessageChannel } from './message-channel.ts'

export interface LeaseClientInit {
  readonly node: Libp2p
  readonly peer: PeerId
  readonly pool: PoolName
  /** `fm-cred:...`: the pool owner's word that we may act for the pool (agents require it). */
  readonly credential?: string | undefined
  /** Bytes our plan places on this worker: the agent judges from it whether pools fit together. */
  readonly memory?: number | undefined
  readonly logger: Logger
  /** Another pool holds the worker: told at once, then we wait in line on the same stream. */
  readonly onBusy?: ((holder: PoolName, freeAt: number) => void) | undefined
  /** Give up waiting (or holding) when this aborts. */
  readonly signal?: AbortSignal | undefined
  /**
   * The worker sent a signed receipt for a period of this lease: answer with our countersignature
   * (recorded on our side first) or with why we dispute it. Without it, receipts are disputed.
   */
  readonly onReceipt?:
    ((receipt: string, signature: string, lease: LeaseInfo) => Promise<ReceiptAnswer>) | undefined
}

export type ReceiptAnswer = { readonly signature: string } | { readonly dispute: string }

export interface LeaseHandle {
  readonly lease: LeaseInfo
  /** Resolves with the epoch ms the agent wants the worker back by, once it asks. */
  readonly revoked: Promise<number>
  /** Resolves when the lease is over, however it ended. */
  readonly ended: Promise<LeaseEndReason | 'stream-closed'>
  /** rpc-server died or came back; every RPC session was lost in the first case. */
  onRpcServer(listener: (state: 'lost' | 'restored') => void): void
  release(): Promise<void>
}

/** Thrown when the agent refuses a lease outright; `reason` is the agent's (see docs/errors.md). */
export class LeaseRefusedError extends MeshError {
  override readonly name = 'LeaseRefusedError'
  readonly reason: RefusalReason

  constructor(reason: RefusalReason) {
    super('ERR_LEASE_REFUSED', `lease refused: ${reason}`)
    this.reason = reason
  }
}

/**
 * Asks a worker's agent for a lease on its rpc-server for `pool`. Resolves once granted (waiting
 * in line while another pool holds it), then renews it until released or ended.
 */
export async function acquireLease(init: LeaseClientInit): Promise<LeaseHandle> {
  const log = init.logger.child({ component: 'lease-client', peer: init.peer.toString(), pool: init.pool })
  const stream = await init.node.dialProtocol(init.peer, PROTOCOL.lease, {
    signal: init.signal ?? AbortSignal.timeout(10_000),
    runOnLimitedConnection: true
  })
  const channel = messageChannel(stream, AgentLeaseMessage, MAX_LEASE_MESSAGE_BYTES)
  try {
    // An agent that refuses at sight (rate limit) may close before our request is out: its
    // refusal is still there to read, and says more than the failed write.
    const unsent = await channel
      .send({
        type: 'request',
        version: 1,
        pool: init.pool,
        credential: init.credential,
        ...(init.memory === undefined ? {} : { memory: Math.ceil(init.memory) })
      })
      .then(
        () => undefined,
        (err: unknown) => err
      )
    const lease = await waitForGrant(channel, init).catch((err: unknown) => {
      throw err instanceof LeaseRefusedError || unsent === undefined ? err : unsent
    })
    log.info(
      { lease: lease.id, sharing: lease.sharing ?? 'exclusive', quota: lease.quotaBytes },
      'lease granted'
    )
    return holdLease(channel, lease, log, init.onReceipt)
  } catch (err) {
    channel.abort(err instanceof Error ? err : new Error(String(err)))
    throw err
  }
}

async function waitForGrant(
  channel: MessageChannel<AgentLeaseMessage>,
  init: LeaseClientInit
): Promise<LeaseInfo> {
  while (true) {
    const message = await channel.receive(init.signal)
    if (message.type === 'granted') return message.lease
    if (message.type === 'busy') init.onBusy?.(message.holder, message.freeAt)
    if (message.type === 'refused') throw new LeaseRefusedError(message.reason)
  }
}

function holdLease(
  channel: MessageChannel<AgentLeaseMessage>,
  lease: LeaseInfo,
  log: Logger,
  onReceipt: LeaseClientInit['onReceipt']
): LeaseHandle {
  const answerReceipt = async (receipt: string, signature: string): Promise<void> => {
    const seq = receiptSeq(receipt)
    const answer: ReceiptAnswer =
      onReceipt === undefined
        ? { dispute: 'this orchestrator keeps no ledger' }
        : await onReceipt(receipt, signature, lease).catch((err: unknown) => ({
            dispute: (err as Error).message
          }))
    await channel
      .send(
        'signature' in answer
          ? { type: 'receipt-signed', version: 1, seq, signature: answer.signature }
          : { type: 'receipt-disputed', version: 1, seq, reason: answer.dispute.slice(0, 500) }
      )
      .catch(() => {})
  }
  const revoked = Promise.withResolvers<number>()
  const ended = Promise.withResolvers<LeaseEndReason | 'stream-closed'>()
  const rpcListeners: Array<(state: 'lost' | 'restored') => void> = []
  const renew = setInterval(
    () => {
      channel.send({ type: 'renew', version: 1, leaseId: lease.id }).catch(() => {})
    },
    Math.max(100, Math.floor(lease.ttlMs / 3))
  )
  void (async () => {
    try {
      while (true) {
        const message = await channel.receive()
        if (message.type === 'revoke') {
          log.info({ lease: lease.id, revokeBy: message.revokeBy }, 'lease revoked')
          revoked.resolve(message.revokeBy)
        } else if (message.type === 'rpc-server') {
          for (const listener of rpcListeners) listener(message.state)
        } else if (message.type === 'receipt') {
          void answerReceipt(message.receipt, message.signature)
        } else if (message.type === 'ended') {
          ended.resolve(message.reason)
          return
        }
      }
    } catch {
      ended.resolve('stream-closed')
    } finally {
      clearInterval(renew)
      await channel.close()
    }
  })()
  return {
    lease,
    revoked: revoked.promise,
    ended: ended.promise,
    onRpcServer: (listener) => rpcListeners.push(listener),
    release: async () => {
      await channel.send({ type: 'release', version: 1, leaseId: lease.id }).catch(() => {})
      await ended.promise
    }
  }
}

/** The receipt's period number, for the answer to name; 0 when unreadable (it is disputed then). */
function receiptSeq(text: string): number {
  try {
    const seq = (JSON.parse(text) as { seq?: unknown }).seq
    return typeof seq === 'number' && Number.isInteger(seq) && seq >= 0 && seq <= 1_000_000 ? seq : 0
  } catch {
    return 0
  }
}
