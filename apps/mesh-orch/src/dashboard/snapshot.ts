import { basename } from 'node:path'
import { z } from 'zod'
import type { OrchestratorStatus } from '../serve.ts'

/** Rows a snapshot carries at most, so that one message stays small whatever the pool's size. */
export const MAX_ROWS = 256
export const MAX_DEPARTED = 16

const Count = z.number().int().nonnegative()
const Amount = z.number().nonnegative()
const Millis = z.number().int().nonnegative()
/** Longest text a snapshot carries: free text from the status (errors, reasons) is cut to it. */
export const MAX_TEXT = 2_000
const Text = z.string().max(MAX_TEXT)
const clip = (text: string): string => (text.length <= MAX_TEXT ? text : `${text.slice(0, MAX_TEXT - 1)}…`)

const Link = z.object({
  connections: Count,
  sentBytes: Count,
  receivedBytes: Count,
  loadedBytes: Count,
  computes: Count,
  computeMs: Amount,
  /** Bytes a second over the last few seconds; null until two samples exist. */
  sentPerSecond: Amount.nullable(),
  receivedPerSecond: Amount.nullable()
})

/** What the dashboard's WebSocket sends: one whole snapshot per message. */
export const DashboardSnapshot = z.object({
  type: z.literal('snapshot'),
  version: z.literal(1),
  at: Millis,
  pool: Text,
  peerId: Text,
  /** The model's file name (not its path), and its layer count. */
  model: Text.nullable(),
  modelLayers: Count.nullable(),
  state: Text,
  lastPlanError: Text.nullable(),
  requests: z.object({ inFlight: Count, queued: Count }),
  tokens: z.object({ generated: Count, perSecond: Amount }),
  load: z.object({ doneBytes: Count, totalBytes: Count, finished: z.boolean() }).nullable(),
  credits: z.object({ earned: Amount, spent: Amount, receipts: Count, disputes: Count }),
  failover: z.object({ reason: Text, invalidatedAt: Millis, servingAt: Millis.nullable() }).nullable(),
  /** The serving plan in `--rpc` order, each with its tunnel's figures once it has one. */
  plan: z
    .array(
      z.object({
        peer: Text,
        layers: z.tuple([Count, Count]).nullable(),
        holdsOutput: z.boolean(),
        bytes: Count,
        rttMs: Amount.nullable(),
        link: Link.nullable()
      })
    )
    .max(MAX_ROWS),
  workers: z
    .array(
      z.object({
        peer: Text,
        offeredBytes: Count,
        freeBytes: Count,
        rttMs: Amount.nullable(),
        leasedBy: Text.nullable(),
        sliceUntil: Millis.nullable(),
        lastSeen: Millis,
        /** Its place in the plan (0 = first `--rpc`), or null when the plan does not use it. */
        planIndex: Count.nullable()
      })
    )
    .max(MAX_ROWS),
  /** Workers that left the view lately, newest first. */
  departed: z.array(z.object({ peer: Text, at: Millis, reason: Text })).max(MAX_DEPARTED)
})
export type DashboardSnapshot = z.infer<typeof DashboardSnapshot>

export interface Departure {
  readonly peer: string
  readonly at: number
  readonly reason: string
}

export type LinkRate = { readonly sentPerSecond: number; readonly receivedPerSecond: number }

interface Sample {
  readonly at: number
  readonly bytes: ReadonlyMap<string, { sent: number; received: number }>
}

/**
 * Per-tunnel byte rates from counter samples taken at most every `sampleMs`, averaged over the
 * last `windowMs` (like the token rate), so that snapshots pushed close together do not divide
 * by a few milliseconds and a burst does not read as zero a second later. A counter that went
 * down (a new tunnel after a re-plan) restarts that peer's rate.
 */
export class LinkRates {
  private readonly samples: Sample[] = []
  private rates = new Map<string, LinkRate>()
  private readonly windowMs: number
  private readonly sampleMs: number

  constructor(windowMs = 5_000, sampleMs = 900) {
    this.windowMs = windowMs
    this.sampleMs = sampleMs
  }

  update(tunnels: OrchestratorStatus['tunnels'], now: number): ReadonlyMap<string, LinkRate> {
    const latest = this.samples.at(-1)
    if (latest !== undefined && now - latest.at < this.sampleMs) return this.rates
    const bytes = new Map(
      tunnels.map((t) => [t.peer, { sent: t.traffic.requestBytes, received: t.traffic.responseBytes }])
    )
    // Samples from before a long quiet spell (no dashboard open) say nothing about now.
    if (latest !== undefined && now - latest.at > 2 * this.windowMs) this.samples.length = 0
    // Keep the newest sample at least `windowMs` old as the base, and none older.
    while (this.samples.length > 1 && now - (this.samples[1] as Sample).at >= this.windowMs)
      this.samples.shift()
    const base = this.samples[0]
    const rates = new Map<string, LinkRate>()
    if (base !== undefined)
      for (const [peer, current] of bytes) {
        const before = base.bytes.get(peer)
        if (before === undefined || current.sent < before.sent || current.received < before.received) continue
        const seconds = (now - base.at) / 1000
        rates.set(peer, {
          sentPerSecond: (current.sent - before.sent) / seconds,
          receivedPerSecond: (current.received - before.received) / seconds
        })
      }
    this.samples.push({ at: now, bytes })
    this.rates = rates
    return rates
  }
}

/** Shapes the orchestrator's status (the same snapshot /metrics reads) into what the page shows. */
export function dashboardSnapshot(
  status: OrchestratorStatus,
  rates: ReadonlyMap<string, LinkRate>,
  departed: readonly Departure[],
  now: number
): DashboardSnapshot {
  const rtt = new Map(status.workers.map((w) => [w.peer, w.rttMs]))
  const tunnels = new Map(status.tunnels.map((t) => [t.peer, t]))
  const planIndex = new Map(status.planned.map((p, i) => [p.peer, i]))
  const present = new Set(status.workers.map((w) => w.peer))
  const failover = status.lastFailover ?? null
  return {
    type: 'snapshot',
    version: 1,
    at: now,
    pool: status.pool,
    peerId: status.peerId,
    model: status.model === undefined ? null : basename(status.model),
    modelLayers: status.modelLayers,
    state: status.state,
    lastPlanError: status.lastPlanError === null ? null : clip(status.lastPlanError),
    requests: { inFlight: status.requestsInFlight, queued: status.queued },
    tokens: { generated: status.tokens.generated, perSecond: status.tokens.perSecond },
    load: status.load,
    credits: {
      earned: status.credits.earned,
      spent: status.credits.spent,
      receipts: status.credits.recorded,
      disputes: status.credits.disputes
    },
    failover:
      failover === null
        ? null
        : {
            reason: clip(failover.reason),
            invalidatedAt: failover.invalidatedAt,
            servingAt: failover.servingAt ?? null
          },
    plan: status.planned.slice(0, MAX_ROWS).map((p) => {
      const tunnel = tunnels.get(p.peer)
      const rate = rates.get(p.peer)
      return {
        peer: p.peer,
        layers: p.layers === null ? null : [p.layers[0], p.layers[1]],
        holdsOutput: p.holdsOutput,
        bytes: p.bytes,
        rttMs: rtt.get(p.peer) ?? null,
        link:
          tunnel === undefined
            ? null
            : {
                connections: tunnel.connections,
                sentBytes: tunnel.traffic.requestBytes,
                receivedBytes: tunnel.traffic.responseBytes,
                loadedBytes: tunnel.traffic.uploadBytes,
                computes: tunnel.traffic.computes,
                computeMs: tunnel.traffic.computeMs,
                sentPerSecond: rate?.sentPerSecond ?? null,
                receivedPerSecond: rate?.receivedPerSecond ?? null
              }
      }
    }),
    workers: status.workers.slice(0, MAX_ROWS).map((w) => ({
      peer: w.peer,
      offeredBytes: w.offeredBytes,
      freeBytes: w.freeBytes,
      rttMs: w.rttMs,
      leasedBy: w.leasedBy,
      sliceUntil: w.sliceUntil,
      lastSeen: w.lastSeen,
      planIndex: planIndex.get(w.peer) ?? null
    })),
    // A worker that came back is no longer gone.
    departed: departed
      .filter((d) => !present.has(d.peer))
      .slice(0, MAX_DEPARTED)
      .map((d) => ({ ...d, reason: clip(d.reason) }))
  }
}
