import { ensureBinaries } from '@frankenstein-mesh/llama'
import {
  createMeshNode,
  dialDiscovered,
  loadOrCreateIdentity,
  startRendezvous
} from '@frankenstein-mesh/mesh'
import { Ledger } from '@frankenstein-mesh/credits'
import { NO_TRAFFIC, addTraffic, type TrafficTotals } from '@frankenstein-mesh/tunnel'
import type { Logger } from 'pino'
import { OrchestratorCredits } from './credits.ts'
import { Spending } from './spending.ts'
import { orchestratorMetrics } from './metrics.ts'
import type { ServeOptions } from './config.ts'
import { startHttpFront } from './http-front.ts'
import { Orchestrator, describePlan, type ModelLoad } from './orchestrator.ts'
import { TokenMeter } from './token-meter.ts'
import { startDashboard } from './dashboard/feed.ts'
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
  /** Layers of the model (its repeating blocks), when it has been read. */
  readonly modelLayers: number | null
  readonly state: string
  readonly lastPlanError: string | null
  readonly plan: string[]
  /** The serving plan, in `--rpc` order: which worker holds which layers. */
  readonly planned: Array<{
    peer: string
    layers: readonly [number, number] | null
    holdsOutput: boolean
    bytes: number
  }>
  /** The last plan's model load. */
  readonly load: ModelLoad | null
  readonly requestsInFlight: number
  /** Requests waiting for a generation slot. */
  readonly queued: number
  /** Tokens generated for callers since start, and per second over the last few seconds. */
  readonly tokens: { readonly generated: number; readonly perSecond: number }
  readonly lastFailover: Orchestrator['lastFailover'] | null
  /**
   * Receipts countersigned and disputed since start; the pool's credit in our ledger: earned by
   * its workers (receipts) and spent by its callers (charges).
   */
  readonly credits: {
    readonly recorded: number
    readonly disputes: number
    readonly earned: number
    readonly spent: number
  }
  readonly workers: Array<{
    peer: string
    offeredBytes: number
    freeBytes: number
    rttMs: number | null
    lease: string
    /** The pool holding it (ours while it is in our plan), or null when idle. */
    leasedBy: string | null
    /** Epoch ms its holder's slice is expected to end, when the agent said. */
    sliceUntil: number | null
    lastSeen: number
  }>
  /** Per worker of the serving plan: its tunnel's open connections and counters, summed over them. */
  /** `connections`: open now; `traffic`: every connection the tunnel carried, summed. */
  readonly tunnels: Array<{ peer: string; connections: number; traffic: TrafficTotals }>
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
  // The dashboard is wired after the orchestrator it watches; until then there is no one to tell.
  let creditChanged = (): void => {}
  const orchestrator = new Orchestrator({
    admit: (peer, advert) => authority.admit(peer, advert),
    countersign: async (peer, receipt, signature, lease, measured) => {
      const answer = await credits.countersign(peer, receipt, signature, lease, measured)
      creditChanged()
      return answer
    },
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
  const tokens = new TokenMeter()
  // The ledger's figures once; what this process adds to them is counted as it happens.
  const ledgerAtStart = ledger.totals(options.pool)
  // Read at each scrape and push; `status` is defined below with the returned object, hence the indirection.
  const metrics = orchestratorMetrics({ status: () => serving.status() })
  const dashboard = startDashboard({ orchestrator, status: () => serving.status(), logger })
  creditChanged = () => dashboard.changed()
  const front = await startHttpFront({
    orchestrator,
    host: options.host,
    port: options.port,
    logger,
    queueTimeoutMs: options.queueTimeout * 1000,
    spending,
    metrics: async () => ({ text: await metrics.scrape(), contentType: metrics.contentType }),
    onTokens: (generated) => tokens.add(generated),
    dashboard
  })
  const serving: Serving = {
    authority,
    url: front.url,
    peerId: identity.peerId,
    orchestrator,
    addresses: () => node.getMultiaddrs().map((a) => a.toString()),
    status: () => {
      const plan = orchestrator.plan
      const planned = new Set(orchestrator.state === 'serving' ? (plan?.workers.map((w) => w.id) ?? []) : [])
      return {
        peerId: identity.peerId,
        url: front.url,
        pool: options.pool,
        owner: authority.owner,
        model: orchestrator.modelPath,
        modelLayers: orchestrator.modelLayers ?? null,
        state: orchestrator.state,
        lastPlanError: orchestrator.lastPlanError ?? null,
        plan: plan === undefined ? [] : describePlan(plan),
        planned: (plan?.workers ?? []).map((w) => ({
          peer: w.id,
          layers: w.layers,
          holdsOutput: w.holdsOutput,
          bytes: w.bytes
        })),
        load: orchestrator.load ?? null,
        requestsInFlight: orchestrator.requestsInFlight,
        queued: spending.queued,
        tokens: { generated: tokens.total, perSecond: tokens.perSecond() },
        lastFailover: orchestrator.lastFailover ?? null,
        credits: {
          recorded: credits.recorded,
          disputes: credits.disputes,
          earned: ledgerAtStart.earned + credits.earned,
          spent: ledgerAtStart.spent + spending.spent
        },
        workers: orchestrator.directory.list().map((w) => {
          // Our own plan's workers are ours now, whatever their last advert (refreshed every few seconds) said.
          const leasedBy = planned.has(w.peer.toString())
            ? options.pool
            : w.advert.lease.state === 'leased'
              ? (w.advert.lease.pool ?? '?')
              : null
          return {
            peer: w.peer.toString(),
            offeredBytes: w.advert.memory.offered,
            freeBytes: w.advert.memory.free,
            rttMs: w.rttMs ?? null,
            lease: leasedBy === null ? 'idle' : `leased by ${leasedBy}`,
            leasedBy,
            sliceUntil: w.advert.lease.until ?? null,
            lastSeen: w.lastSeen
          }
        }),
        tunnels: orchestrator.tunnels.map((t) => ({
          peer: t.peer.toString(),
          connections: t.open,
          traffic: t.traffic().reduce(addTraffic, NO_TRAFFIC)
        }))
      }
    },
    stop: async () => {
      dashboard.close()
      await front.close()
      await orchestrator.stop()
      rendezvous.stop()
      await node.stop()
      credits.ledger.close()
    }
  }
  return serving
}
