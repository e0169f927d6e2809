import { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import type { PeerId } from '@libp2p/interface'
import { createProgress, modelLayout, readGguf, type ModelLayout } from '@frankenstein-mesh/llama'
import { WorkerDirectory, type MeshNode, type WorkerEntry } from '@frankenstein-mesh/mesh'
import type { WorkerAdvert } from '@frankenstein-mesh/protocol'
import type { Logger } from 'pino'
import {
  WorkerBusyError,
  WorkerUnreachableError,
  deploy,
  type Deployment,
  type Invalidation,
  type DeploymentInit
} from './deployment.ts'
import { OrchError } from './errors.ts'
import { placedBytes, planPlacement, type Plan } from './placement.ts'

export type ServingState = 'waiting-for-workers' | 'loading' | 'serving' | 'draining' | 'stopped'

export interface OrchestratorInit {
  readonly node: MeshNode
  readonly pool: string
  readonly model: string
  readonly llamaServer: string
  readonly logger: Logger
  readonly contextSize: number
  readonly parallel: number
  /** How long in-flight requests may finish after a revocation, at most (the grace bounds it too). */
  readonly drainMs?: number | undefined
  readonly workerRefreshMs?: number | undefined
  /** Pool admission: whether to use a worker at all. */
  readonly admit?: ((peer: PeerId, advert: WorkerAdvert) => Promise<boolean>) | undefined
  /** The credential shown to agents when asking for leases. */
  readonly credential?: (() => Promise<string>) | undefined
  /** Countersigns workers' receipts (see deployment.ts). */
  readonly countersign?: DeploymentInit['countersign']
  /** A plan is only replaced by a better one (fewer workers) this long after it was deployed. */
  readonly betterPlanAfterMs?: number | undefined
  readonly workerExpiryMs?: number | undefined
}

export interface OrchestratorEvents {
  state: [ServingState]
  plan: [Plan]
  load: [ModelLoad]
}

/** The model load of the last plan: bytes streamed to its workers so far, of the bytes it places. */
export interface ModelLoad {
  readonly doneBytes: number
  readonly totalBytes: number
  readonly finished: boolean
}

/**
 * Keeps the pool serving: plans over the workers it knows, leases them, runs llama-server across
 * them, and starts over when a worker is lost, a lease is revoked or the model changes. Requests
 * get the llama-server to use through `admit()`, which waits (bounded) while a plan is being
 * (re)built and counts what is in flight so that a revocation can drain it first.
 */
export class Orchestrator extends EventEmitter<OrchestratorEvents> {
  readonly directory: WorkerDirectory
  private readonly init: OrchestratorInit
  private readonly log: Logger
  private model: { path: string; layout: ModelLayout } | undefined
  private deployment: Deployment | undefined
  private stateValue: ServingState = 'waiting-for-workers'
  private inFlight = 0
  /** Workers another pool holds (we may line up for them), and workers that failed us (we may not). */
  private readonly busyUntil = new Map<string, number>()
  private readonly unreachableUntil = new Map<string, number>()
  private wake: (() => void) | undefined
  private stopped = false
  private deployedAt = 0
  private loop: Promise<void> | undefined
  lastPlanError: string | undefined
  /** The last plan's model load, while it runs and after. */
  load: ModelLoad | undefined
  /** When the last plan stopped serving, and how long the way back took (epoch ms). */
  lastFailover: { reason: string; invalidatedAt: number; plannedAt?: number; servingAt?: number } | undefined

  constructor(init: OrchestratorInit) {
    super()
    this.init = init
    this.log = init.logger.child({ component: 'orchestrator', pool: init.pool })
    this.directory = new WorkerDirectory({
      node: init.node,
      pool: init.pool,
      logger: init.logger,
      refreshMs: init.workerRefreshMs,
      expiryMs: init.workerExpiryMs,
      admit: init.admit
    })
  }

  get state(): ServingState {
    return this.stateValue
  }

  get plan(): Plan | undefined {
    return this.deployment?.plan
  }

  get modelPath(): string | undefined {
    return this.model?.path
  }

  get modelLayers(): number | undefined {
    return this.model?.layout.layerCount
  }

  get requestsInFlight(): number {
    return this.inFlight
  }

  async start(): Promise<void> {
    await this.setModel(this.init.model)
    this.directory.on('added', () => this.wake?.())
    this.directory.on('removed', (entry) => this.onWorkerGone(entry.peer.toString()))
    // A closed connection is the earliest sign of a dead worker: skip it until discovery sees it again.
    this.init.node.addEventListener('peer:disconnect', (evt) =>
      this.unreachableUntil.set(evt.detail.toString(), Date.now() + 10_000)
    )
    this.directory.on('added', (entry) => {
      this.unreachableUntil.delete(entry.peer.toString())
      this.considerBetterPlan()
    })
    this.directory.start()
    this.loop = this.run()
  }

  /** Drains what is in flight, stops llama-server, releases every lease. */
  async stop(): Promise<void> {
    this.stopped = true
    this.deployment?.invalidate({ kind: 'replaced', reason: 'stopping' })
    this.wake?.()
    this.directory.stop()
    await this.loop
    this.setState('stopped')
  }

  /** Serves another model from now on: the running plan is replaced once its requests are done. */
  async setModel(path: string): Promise<void> {
    const layout = modelLayout(await readGguf(path))
    const replacing = this.model !== undefined
    this.model = { path, layout }
    this.log.info({ model: path, layers: layout.layerCount, bytes: layout.totalBytes }, 'model')
    if (replacing) this.replace('model changed')
  }

  /**
   * Waits until llama-server serves (at most `timeoutMs`) and returns its URL and a `done` to call
   * when the request is over. Throws ERR_UNAVAILABLE past the bound.
   */
  /** The tunnels of the serving plan, one per worker (empty while none serves). */
  get tunnels(): Deployment['tunnels'] {
    return this.deployment?.tunnels ?? []
  }

  async admit(timeoutMs: number, signal?: AbortSignal): Promise<{ url: string; done: () => void }> {
    const deadline = Date.now() + timeoutMs
    while (this.stateValue !== 'serving' || this.deployment === undefined) {
      if (this.stopped) throw new OrchError('ERR_UNAVAILABLE', 'the orchestrator is stopping')
      if (Date.now() >= deadline)
        throw new OrchError(
          'ERR_UNAVAILABLE',
          `no plan is serving (${this.stateValue}${this.lastPlanError === undefined ? '' : `: ${this.lastPlanError}`})`
        )
      await sleep(50, undefined, signal === undefined ? {} : { signal })
    }
    this.inFlight++
    let finished = false
    return {
      url: this.deployment.url,
      done: () => {
        if (!finished) this.inFlight--
        finished = true
      }
    }
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const deployment = await this.deployOnce()
      if (deployment === 'retry') {
        await this.idle(200)
        continue
      }
      if (deployment === undefined) {
        await this.idle(2_000)
        continue
      }
      this.deployment = deployment
      this.deployedAt = Date.now()
      if (this.lastFailover !== undefined) this.lastFailover.servingAt ??= Date.now()
      this.setState('serving')
      const why = await deployment.invalidated
      await this.retire(deployment, why)
    }
  }

  /** A deployment; undefined when no plan is possible now; 'retry' when one worker failed and others may do. */
  private async deployOnce(): Promise<Deployment | 'retry' | undefined> {
    const model = this.model as { path: string; layout: ModelLayout }
    const now = Date.now()
    const known = this.directory.list()
    const plan = (workers: typeof known) =>
      planPlacement(
        workers.map((w) => ({
          id: w.peer.toString(),
          offeredBytes: w.advert.memory.offered,
          rttMs: w.rttMs
        })),
        { layout: model.layout, contextTokens: this.init.contextSize * this.init.parallel }
      )
    // Free workers first; only when they cannot hold the model, line up for busy ones: the agent
    // shares them between pools, and it only counts a pool that waits.
    const free = known.filter(
      (w) => (this.busyUntil.get(w.peer.toString()) ?? 0) <= now && !leasedByOthers(w, this.init.pool)
    )
    let result = plan(free)
    let waitInLine = false
    if (!result.ok && free.length < known.length) {
      result = plan(known)
      waitInLine = result.ok
    }
    const workers = known
    if (!result.ok) {
      this.noteError(result.reason)
      this.setState('waiting-for-workers')
      return undefined
    }
    if (waitInLine) this.noteError('waiting in line for workers other pools hold')
    this.setState('loading')
    if (this.lastFailover !== undefined && this.lastFailover.servingAt === undefined)
      this.lastFailover.plannedAt = Date.now()
    this.log.info({ plan: describePlan(result.plan) }, 'deploying plan')
    this.emit('plan', result.plan)
    const total = placedBytes(model.layout, 0)
    const progress = createProgress({ logger: this.log, label: 'model load', total, unit: 'bytes' })
    const loaded = (bytes: number, finished: boolean) => {
      progress.update(Math.min(bytes, total))
      this.load = { doneBytes: Math.min(bytes, total), totalBytes: total, finished }
      this.emit('load', this.load)
    }
    loaded(0, false)
    try {
      const deployment = await deploy({
        node: this.init.node,
        pool: this.init.pool,
        plan: result.plan,
        peers: new Map<string, PeerId>(workers.map((w) => [w.peer.toString(), w.peer])),
        llamaServer: this.init.llamaServer,
        model: model.path,
        contextSize: this.init.contextSize,
        parallel: this.init.parallel,
        logger: this.init.logger,
        onLoadProgress: (bytes) => loaded(bytes, false),
        waitInLine,
        credential: await this.init.credential?.(),
        countersign: this.init.countersign
      })
      progress.finish()
      loaded(total, true)
      this.lastPlanError = undefined
      return deployment
    } catch (err) {
      this.noteError((err as Error).message)
      if (err instanceof WorkerBusyError) this.busyUntil.set(err.peer, err.freeAt)
      else if (err instanceof WorkerUnreachableError) this.unreachableUntil.set(err.peer, Date.now() + 10_000)
      else return undefined
      return 'retry'
    }
  }

  /** Takes a deployment down: a revocation drains in-flight requests first (until its deadline). */
  private async retire(deployment: Deployment, why: Invalidation): Promise<void> {
    this.log.warn({ why }, 'plan no longer serves')
    this.lastFailover = { reason: why.kind, invalidatedAt: Date.now() }
    if (why.kind === 'revoked' || why.kind === 'replaced') {
      this.setState('draining')
      const deadline =
        why.kind === 'revoked'
          ? Math.min(why.revokeBy - 1_000, Date.now() + (this.init.drainMs ?? 60_000))
          : Date.now() + (this.init.drainMs ?? 60_000)
      while (this.inFlight > 0 && Date.now() < deadline) await sleep(50)
    }
    // A revoked worker belongs to another pool for a while; a lost one must show up again first.
    if (why.kind === 'revoked') this.busyUntil.set(why.peer, Date.now() + 10_000)
    this.setState('waiting-for-workers')
    this.deployment = undefined
    await deployment.stop(why.kind !== 'revoked' && why.kind !== 'replaced')
  }

  /**
   * A worker joined while we serve: switch only for a plan with fewer workers (one round trip
   * less per token), and not within `betterPlanAfterMs` of the last deployment; every switch
   * costs a model load, so a slightly nearer worker is not worth one.
   */
  private considerBetterPlan(): void {
    const current = this.deployment
    const model = this.model
    if (current === undefined || model === undefined || this.stateValue !== 'serving') return
    if (Date.now() - this.deployedAt < (this.init.betterPlanAfterMs ?? 5 * 60_000)) return
    const now = Date.now()
    const candidates = this.directory
      .list()
      .filter(
        (w) =>
          (this.unreachableUntil.get(w.peer.toString()) ?? 0) <= now &&
          (this.busyUntil.get(w.peer.toString()) ?? 0) <= now
      )
      .filter((w) => !leasedByOthers(w, this.init.pool))
      .map((w) => ({ id: w.peer.toString(), offeredBytes: w.advert.memory.offered, rttMs: w.rttMs }))
    const better = planPlacement(candidates, {
      layout: model.layout,
      contextTokens: this.init.contextSize * this.init.parallel
    })
    if (better.ok && better.plan.workers.length < current.plan.workers.length) {
      this.replace(
        `a plan with ${better.plan.workers.length} workers instead of ${current.plan.workers.length}`
      )
    }
  }

  private replace(reason: string): void {
    this.deployment?.invalidate({ kind: 'replaced', reason })
    this.wake?.()
  }

  private onWorkerGone(peer: string): void {
    if (this.deployment?.plan.workers.some((w) => w.id === peer) === true)
      this.deployment.invalidate({ kind: 'worker-gone', peer })
  }

  private async idle(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
    this.wake = undefined
  }

  private noteError(message: string): void {
    if (message !== this.lastPlanError) this.log.warn({ reason: message }, 'cannot serve yet')
    this.lastPlanError = message
  }

  private setState(state: ServingState): void {
    if (state === this.stateValue) return
    this.stateValue = state
    this.log.info({ state }, 'state')
    this.emit('state', state)
  }
}

function leasedByOthers(worker: WorkerEntry, pool: string): boolean {
  return worker.advert.lease.state === 'leased' && worker.advert.lease.pool !== pool
}

/** `worker 12D3…: layers 0-9` lines, for logs and status. */
export function describePlan(plan: Plan): string[] {
  return plan.workers.map((w) => {
    const layers = w.layers === null ? 'no layers' : `layers ${w.layers[0]}-${w.layers[1]}`
    return `${w.id}: ${layers}${w.holdsOutput ? ' + output' : ''}, ${(w.bytes / 1024 ** 2).toFixed(1)} MiB`
  })
}
