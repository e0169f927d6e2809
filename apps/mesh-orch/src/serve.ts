import { ensureBinaries } from '@frankenstein-mesh/llama'
import {
  createMeshNode,
  dialDiscovered,
  loadOrCreateIdentity,
  startRendezvous
} from '@frankenstein-mesh/mesh'
import { Ledger } from '@frankenstein-mesh/credits'
import type { Logger } from 'pino'
import { OrchestratorCredits } from './credits.ts'
import { Spending } from './spending.ts'
import { orchestratorMetrics } from './metrics.ts'
import type { ServeOptions } from './config.ts'
import { startHttpFront } from './http-front.ts'
import { Orchestrator, describePlan } from './orchestrator.ts'
import { OrchestratorAuthority, defaultPoolKeyPath } from './pool-authority.ts'

export interface Serving {
  readonly authority: OrchestratorAuthority
  readonly url: string
  readonly peerId: string
  readonly orchestrator: Orchestrator
  addresses(): string[]
  status(): OrchestratorStatus
  stop(): Promise<void>
}

export interface OrchestratorStatus {
  readonly peerId: string
  readonly url: string
  readonly pool: string
  readonly owner: string
  readonly model: string | undefined
  readonly state: string
  readonly lastPlanError: string | null
  readonly plan: string[]
  readonly requestsInFlight: number
  readonly lastFailover: Orchestrator['lastFailover'] | null
  /** Receipts countersigned and disputed since start. */
  readonly credits: { readonly recorded: number; readonly disputes: number }
  readonly workers: Array<{
    peer: string
    offeredBytes: number
    freeBytes: number
    rttMs: number | null
    lease: string
    lastSeen: number
  }>
}

/** Wires the orchestrator: identity, mesh node, discovery, the serving loop, the HTTP front. */
export async function startServing(options: ServeOptions, logger: Logger): Promise<Serving> {
  const identity = await loadOrCreateIdentity(options.identity)
  const llamaServer = options.llamaServerBin ?? (await ensureBinaries({ logger })).llamaServer
  const node = await createMeshNode({
    privateKey: identity.privateKey,
    listen: options.listen,
    announce: options.announce.length > 0 ? options.announce : undefined,
    bootstrap: options.bootstrap,
    mdns: options.mdns
  })
  const dial = dialDiscovered(node, logger)
  const rendezvous = startRendezvous({
    node,
    pools: [options.pool],
    role: 'orchestrator',
    logger,
    refreshMs: options.rendezvousRefresh * 1000,
    onPeer: (peer) => dial(peer)
  })
  const authority = await OrchestratorAuthority.create({
    pool: options.pool,
    node,
    logger,
    poolKeyPath:
      options.credential === undefined
        ? (options.poolKey ?? defaultPoolKeyPath(options.identity, options.pool))
        : undefined,
    credential: options.credential,
    admission: options.admission
  })
  const ledger = Ledger.open(options.ledger ?? `${options.identity}.ledger.sqlite`)
  const credits = new OrchestratorCredits({
    key: identity.privateKey,
    self: identity.peerId,
    pool: options.pool,
    ledger,
    logger
  })
  const spending = new Spending({
    pool: options.pool,
    key: identity.privateKey,
    ledger,
    anonymous: options.anonymous === 'allow',
    slots: options.parallel,
    logger
  })
  const orchestrator = new Orchestrator({
    admit: (peer, advert) => authority.admit(peer, advert),
    countersign: (peer, receipt, signature, lease, measured) =>
      credits.countersign(peer, receipt, signature, lease, measured),
    credential: () => authority.credential(),
    node,
    pool: options.pool,
    model: options.model,
    llamaServer,
    logger,
    contextSize: options.ctxSize,
    parallel: options.parallel,
    workerExpiryMs: options.workerExpiry * 1000,
    betterPlanAfterMs: options.betterPlanAfter * 1000,
    workerRefreshMs: Math.min(5_000, (options.workerExpiry * 1000) / 3)
  })
  orchestrator.on('plan', (plan) => logger.info({ plan: describePlan(plan) }, 'plan'))
  orchestrator.directory.on('added', (entry) => void authority.pushTo(entry.peer))
  await orchestrator.start()
  // Read at each scrape; `status` is defined below with the returned object, hence the indirection.
  const metrics = orchestratorMetrics({
    status: () => serving.status(),
    queued: () => spending.queued,
    tunnels: () => orchestrator.tunnels
  })
  const front = await startHttpFront({
    orchestrator,
    host: options.host,
    port: options.port,
    logger,
    queueTimeoutMs: options.queueTimeout * 1000,
    spending,
    metrics: async () => ({ text: await metrics.scrape(), contentType: metrics.contentType })
  })
  const serving: Serving = {
    authority,
    url: front.url,
    peerId: identity.peerId,
    orchestrator,
    addresses: () => node.getMultiaddrs().map((a) => a.toString()),
    status: () => {
      const planned = new Set(
        orchestrator.state === 'serving' ? (orchestrator.plan?.workers.map((w) => w.id) ?? []) : []
      )
      return {
        peerId: identity.peerId,
        url: front.url,
        pool: options.pool,
        owner: authority.owner,
        model: orchestrator.modelPath,
        state: orchestrator.state,
        lastPlanError: orchestrator.lastPlanError ?? null,
        plan: orchestrator.plan === undefined ? [] : describePlan(orchestrator.plan),
        requestsInFlight: orchestrator.requestsInFlight,
        lastFailover: orchestrator.lastFailover ?? null,
        credits: { recorded: credits.recorded, disputes: credits.disputes },
        workers: orchestrator.directory.list().map((w) => ({
          peer: w.peer.toString(),
          offeredBytes: w.advert.memory.offered,
          freeBytes: w.advert.memory.free,
          rttMs: w.rttMs ?? null,
          // Our own plan's workers are ours now, whatever their last advert (refreshed every few seconds) said.
          lease: planned.has(w.peer.toString())
            ? `leased by ${options.pool}`
            : w.advert.lease.state === 'leased'
              ? `leased by ${w.advert.lease.pool ?? '?'}`
              : 'idle',
          lastSeen: w.lastSeen
        }))
      }
    },
    stop: async () => {
      await front.close()
      await orchestrator.stop()
      rendezvous.stop()
      await node.stop()
      credits.ledger.close()
    }
  }
  return serving
}
