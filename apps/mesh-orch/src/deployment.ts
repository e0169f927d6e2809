import type { PeerId } from '@libp2p/interface'
import { startLlamaServer, type LlamaServer } from '@frankenstein-mesh/llama'
import { figuresOf } from '@frankenstein-mesh/credits'
import { acquireLease, type LeaseHandle, type MeshNode, type ReceiptAnswer } from '@frankenstein-mesh/mesh'
import type { Figures, LeaseInfo } from '@frankenstein-mesh/protocol'
import { startRpcTunnel, type RpcTunnel } from '@frankenstein-mesh/tunnel'
import type { Logger } from 'pino'
import { OrchError } from './errors.ts'
import type { Plan } from './placement.ts'

/** Why a running deployment stopped being usable. */
export type Invalidation =
  | { readonly kind: 'revoked'; readonly peer: string; readonly revokeBy: number }
  | { readonly kind: 'lease-ended'; readonly peer: string; readonly reason: string }
  | { readonly kind: 'rpc-server-lost'; readonly peer: string }
  | { readonly kind: 'llama-server-exited'; readonly reason: string }
  | { readonly kind: 'worker-gone'; readonly peer: string }
  | { readonly kind: 'replaced'; readonly reason: string }

export interface DeploymentInit {
  readonly node: MeshNode
  readonly pool: string
  readonly plan: Plan
  readonly peers: ReadonlyMap<string, PeerId>
  readonly llamaServer: string
  readonly model: string
  readonly contextSize: number
  readonly parallel: number
  readonly logger: Logger
  /** Shown to agents with each lease request. */
  readonly credential?: string | undefined
  /** Stay in line for busy workers (granted when the agent's scheduler says so) instead of giving up. */
  readonly waitInLine?: boolean | undefined
  /** Bytes streamed to workers so far, while llama-server loads. */
  readonly onLoadProgress?: ((bytes: number) => void) | undefined
  /** A worker's receipt for a period of its lease, with what our tunnel to it measured. */
  readonly countersign?:
    | ((
        peer: string,
        receipt: string,
        signature: string,
        lease: LeaseInfo,
        measured: Figures
      ) => Promise<ReceiptAnswer>)
    | undefined
}

export interface Deployment {
  readonly plan: Plan
  readonly url: string
  readonly tunnels: readonly RpcTunnel[]
  /** Resolves once, with the first reason the deployment cannot serve any more. */
  readonly invalidated: Promise<Invalidation>
  /** Declares it unusable from outside (the model changed, discovery lost a worker). */
  invalidate(why: Invalidation): void
  /**
   * Stops llama-server, closes the tunnels, releases the leases. `lost`: a worker is gone, so
   * llama-server can only abort: kill it at once instead of waiting for it.
   */
  stop(lost?: boolean): Promise<void>
}

/** Thrown when a planned worker is held by another pool: the caller plans around it. */
export class WorkerBusyError extends OrchError {
  override readonly name = 'WorkerBusyError'
  readonly peer: string
  readonly freeAt: number

  constructor(peer: string, freeAt: number) {
    super('ERR_WORKER_BUSY', `worker ${peer} is busy until about ${new Date(freeAt).toISOString()}`)
    this.peer = peer
    this.freeAt = freeAt
  }
}

/** Thrown when a planned worker cannot be reached or refuses: the caller plans around it. */
export class WorkerUnreachableError extends OrchError {
  override readonly name = 'WorkerUnreachableError'
  readonly peer: string

  constructor(peer: string, cause: unknown) {
    super('ERR_WORKER_UNREACHABLE', `worker ${peer} cannot be leased: ${(cause as Error).message}`, { cause })
    this.peer = peer
  }
}

/** Leases every planned worker, opens a tunnel to each, and starts llama-server across them. */
export async function deploy(init: DeploymentInit): Promise<Deployment> {
  const leases: LeaseHandle[] = []
  const tunnels: RpcTunnel[] = []
  let llama: LlamaServer | undefined
  const stop = async (lost = false): Promise<void> => {
    await (lost ? llama?.process.kill() : llama?.stop())
    await Promise.all(tunnels.map((t) => t.close()))
    await Promise.all(leases.map((l) => l.release()))
  }
  try {
    // What our tunnel to a worker carried (every connection of this deployment): the check on its receipts.
    const measured = (id: string): Figures => {
      const i = init.plan.workers.findIndex((w) => w.id === id)
      return figuresOf(tunnels[i]?.traffic() ?? [])
    }
    for (const worker of init.plan.workers)
      leases.push(await leaseOrBusy(init, worker.id, worker.bytes, measured))
    for (const worker of init.plan.workers)
      tunnels.push(
        await startRpcTunnel({ node: init.node, peer: peerOf(init, worker.id), logger: init.logger })
      )
    const progress = setInterval(() => init.onLoadProgress?.(uploaded(tunnels)), 500)
    try {
      llama = await startLlamaServer({
        binary: init.llamaServer,
        model: init.model,
        logger: init.logger,
        rpc: tunnels.map((t) => t.endpoint),
        tensorSplit: init.plan.tensorSplit,
        contextSize: init.contextSize,
        parallel: init.parallel,
        readyTimeoutMs: 600_000
      })
    } finally {
      clearInterval(progress)
      init.onLoadProgress?.(uploaded(tunnels))
    }
  } catch (err) {
    await stop()
    throw err
  }
  const server = llama
  const { promise, resolve } = Promise.withResolvers<Invalidation>()
  watch(init, leases, server, resolve)
  return { plan: init.plan, url: server.url, tunnels, invalidated: promise, invalidate: resolve, stop }
}

async function leaseOrBusy(
  init: DeploymentInit,
  id: string,
  memory: number,
  measured: (id: string) => Figures
): Promise<LeaseHandle> {
  const countersign = init.countersign
  const controller = new AbortController()
  let busyUntil: number | undefined
  try {
    return await acquireLease({
      node: init.node,
      peer: peerOf(init, id),
      pool: init.pool,
      credential: init.credential,
      memory,
      logger: init.logger,
      signal: AbortSignal.any([
        controller.signal,
        AbortSignal.timeout(init.waitInLine === true ? 30 * 60_000 : 15_000)
      ]),
      onBusy: (_holder, freeAt) => {
        busyUntil = freeAt
        if (init.waitInLine !== true) controller.abort()
      },
      onReceipt:
        countersign === undefined
          ? undefined
          : (receipt, signature, lease) => countersign(id, receipt, signature, lease, measured(id))
    })
  } catch (err) {
    if (busyUntil !== undefined) throw new WorkerBusyError(id, busyUntil)
    throw new WorkerUnreachableError(id, err)
  }
}

function watch(
  init: DeploymentInit,
  leases: readonly LeaseHandle[],
  llama: LlamaServer,
  resolve: (why: Invalidation) => void
): void {
  leases.forEach((lease, i) => {
    const peer = init.plan.workers[i]?.id ?? ''
    void lease.revoked.then((revokeBy) => resolve({ kind: 'revoked', peer, revokeBy }))
    void lease.ended.then((reason) => resolve({ kind: 'lease-ended', peer, reason }))
    lease.onRpcServer((state) => {
      if (state === 'lost') resolve({ kind: 'rpc-server-lost', peer })
    })
  })
  void llama.process.exited.then((exit) =>
    resolve({ kind: 'llama-server-exited', reason: exit.signal ?? `code ${exit.code}` })
  )
}

function peerOf(init: DeploymentInit, id: string): PeerId {
  const peer = init.peers.get(id)
  if (peer === undefined) throw new OrchError('ERR_WORKER_GONE', `worker ${id} is no longer known`)
  return peer
}

function uploaded(tunnels: readonly RpcTunnel[]): number {
  return tunnels.reduce((sum, t) => sum + t.traffic().reduce((s, c) => s + c.uploadBytes, 0), 0)
}
