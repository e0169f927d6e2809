import { EventEmitter } from 'node:events'
import type { PeerId } from '@libp2p/interface'
import { PROTOCOL, type PoolName, type WorkerAdvert } from '@frankenstein-mesh/protocol'
import type { Logger } from 'pino'
import { fetchAdvert } from './adverts.ts'
import type { MeshNode } from './node.ts'

export interface WorkerEntry {
  readonly peer: PeerId
  readonly advert: WorkerAdvert
  /** Epoch ms of the last advert we got from it. */
  readonly lastSeen: number
  /** Round-trip time of the last ping, when one succeeded. */
  readonly rttMs?: number | undefined
}

export interface WorkerDirectoryInit {
  readonly node: MeshNode
  readonly pool: PoolName
  readonly logger: Logger
  /** How often to ask every connected worker for a fresh advert. */
  readonly refreshMs?: number | undefined
  /** A worker not heard from for this long leaves the view. */
  readonly expiryMs?: number | undefined
  readonly now?: (() => number) | undefined
  /** Whether to use this worker at all (pool admission); refused ones are never listed. */
  readonly admit?: ((peer: PeerId, advert: WorkerAdvert) => Promise<boolean>) | undefined
}

export interface WorkerDirectoryEvents {
  added: [WorkerEntry]
  updated: [WorkerEntry]
  removed: [WorkerEntry, string]
}

/**
 * The orchestrator's live view of its pool's workers. A connected peer that speaks the advert
 * protocol is asked what it offers this pool; those that answer are listed, refreshed every
 * `refreshMs`, and dropped `expiryMs` after their last answer (or at once when they stop
 * serving the pool).
 */
export class WorkerDirectory extends EventEmitter<WorkerDirectoryEvents> {
  private readonly init: WorkerDirectoryInit
  private readonly log: Logger
  private readonly workers = new Map<string, WorkerEntry>()
  private readonly asking = new Set<string>()
  private readonly refused = new Set<string>()
  private timer: NodeJS.Timeout | undefined
  private readonly now: () => number

  constructor(init: WorkerDirectoryInit) {
    super()
    this.init = init
    this.log = init.logger.child({ component: 'worker-directory', pool: init.pool })
    this.now = init.now ?? Date.now
  }

  list(): WorkerEntry[] {
    return [...this.workers.values()]
  }

  get(peer: string): WorkerEntry | undefined {
    return this.workers.get(peer)
  }

  start(): void {
    this.init.node.addEventListener('peer:identify', (evt) => {
      if (evt.detail.protocols.includes(PROTOCOL.advert)) void this.ask(evt.detail.peerId)
    })
    this.timer = setInterval(() => this.tick(), this.init.refreshMs ?? 5_000)
    this.tick()
  }

  stop(): void {
    clearInterval(this.timer)
  }

  /** Ask every connected advert speaker now, and expire the silent. */
  tick(): void {
    for (const peer of this.init.node.getPeers()) void this.ask(peer)
    const expiry = this.init.expiryMs ?? 15_000
    for (const [id, entry] of this.workers) {
      if (this.now() - entry.lastSeen > expiry) this.remove(id, 'expired')
    }
  }

  private async ask(peer: PeerId): Promise<void> {
    const id = peer.toString()
    if (this.asking.has(id)) return
    const known = this.workers.get(id)
    if (known === undefined && !(await this.speaksAdverts(peer))) return
    this.asking.add(id)
    try {
      const advert = await fetchAdvert(this.init.node, peer, this.init.pool, { timeoutMs: 5_000 })
      if (!advert.pools.includes(this.init.pool)) {
        this.remove(id, 'left the pool')
        return
      }
      if (this.init.admit !== undefined && !(await this.init.admit(peer, advert))) {
        if (!this.refused.has(id)) this.log.warn({ peer: id }, 'worker not admitted to the pool')
        this.refused.add(id)
        this.remove(id, 'not admitted')
        return
      }
      const rttMs = await this.init.node.services.ping
        .ping(peer, { signal: AbortSignal.timeout(2_000) })
        .catch(() => undefined)
      const entry: WorkerEntry = { peer, advert, lastSeen: this.now(), rttMs: rttMs ?? known?.rttMs }
      this.workers.set(id, entry)
      if (known === undefined) this.log.info({ peer: id, memory: advert.memory, rttMs }, 'worker joined')
      this.emit(known === undefined ? 'added' : 'updated', entry)
    } catch (err) {
      this.log.debug({ peer: id, err: (err as Error).message }, 'no advert')
    } finally {
      this.asking.delete(id)
    }
  }

  private async speaksAdverts(peer: PeerId): Promise<boolean> {
    const stored = await this.init.node.peerStore.get(peer).catch(() => undefined)
    return stored?.protocols.includes(PROTOCOL.advert) === true
  }

  private remove(id: string, reason: string): void {
    const entry = this.workers.get(id)
    if (entry === undefined) return
    this.workers.delete(id)
    this.log.info({ peer: id, reason }, 'worker left')
    this.emit('removed', entry, reason)
  }
}
