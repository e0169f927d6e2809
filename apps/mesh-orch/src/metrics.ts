import { scrapedMetrics, type ScrapedMetrics } from '@frankenstein-mesh/control'
import type { ServingState } from './orchestrator.ts'
import type { OrchestratorStatus } from './serve.ts'
import type { TrafficTotals } from '@frankenstein-mesh/tunnel'

const STATES: readonly ServingState[] = ['waiting-for-workers', 'loading', 'serving', 'draining', 'stopped']

interface Snapshot {
  readonly status: OrchestratorStatus
}

/** The orchestrator's Prometheus metrics (GET /metrics on its HTTP port), from one snapshot a scrape. */
export function orchestratorMetrics(sources: { status: () => OrchestratorStatus }): ScrapedMetrics<Snapshot> {
  const m = scrapedMetrics<Snapshot>(() => ({ status: sources.status() }))
  m.gauge('fm_orch_state', 'the serving state (1 for the current one)', ['state'], (g, { status }) => {
    for (const s of new Set<string>([...STATES, status.state]))
      g.set({ state: s }, s === status.state ? 1 : 0)
  })
  m.gauge('fm_orch_workers', "workers in the pool's view", [], (g, { status }) =>
    g.set(status.workers.length)
  )
  m.gauge('fm_orch_plan_workers', 'workers in the serving plan', [], (g, { status }) =>
    g.set(status.plan.length)
  )
  m.gauge('fm_orch_worker_rtt_seconds', 'round trip to each worker', ['peer'], (g, { status }) => {
    for (const w of status.workers) if (w.rttMs !== null) g.set({ peer: w.peer }, w.rttMs / 1000)
  })
  m.gauge('fm_orch_requests_in_flight', 'requests being answered', [], (g, { status }) =>
    g.set(status.requestsInFlight)
  )
  m.gauge('fm_orch_requests_queued', 'requests waiting for a generation slot', [], (g, { status }) =>
    g.set(status.queued)
  )
  m.gauge('fm_orch_tokens_generated', 'tokens generated for callers since start', [], (g, { status }) =>
    g.set(status.tokens.generated)
  )
  m.gauge('fm_orch_load_bytes', "bytes of the last plan's model load streamed so far", [], (g, { status }) =>
    g.set(status.load?.doneBytes ?? 0)
  )
  const perTunnel = (name: string, help: string, pick: (t: TrafficTotals) => number) =>
    m.gauge(name, help, ['peer'], (g, { status }) => {
      for (const t of status.tunnels) g.set({ peer: t.peer }, pick(t.traffic))
    })
  perTunnel('fm_orch_tunnel_sent_bytes', 'bytes sent to a worker by the serving plan', (t) => t.requestBytes)
  perTunnel('fm_orch_tunnel_received_bytes', 'bytes received from a worker', (t) => t.responseBytes)
  perTunnel('fm_orch_tunnel_loaded_bytes', 'weights and inputs loaded into a worker', (t) => t.uploadBytes)
  perTunnel('fm_orch_tunnel_computes', 'graph computes a worker ran', (t) => t.computes)
  perTunnel(
    'fm_orch_tunnel_compute_seconds',
    'time to each compute result, network included',
    (t) => t.computeMs / 1000
  )
  perTunnel(
    'fm_orch_tunnel_memory_gib_seconds',
    'memory a worker held for the plan over time',
    (t) => t.memoryGiBs
  )
  m.gauge('fm_orch_receipts_countersigned', 'receipts countersigned since start', [], (g, { status }) =>
    g.set(status.credits.recorded)
  )
  m.gauge('fm_orch_receipts_disputed', 'receipts disputed since start', [], (g, { status }) =>
    g.set(status.credits.disputes)
  )
  m.gauge('fm_orch_credit_earned', "credit the pool's workers earned, in our ledger", [], (g, { status }) =>
    g.set(status.credits.earned)
  )
  m.gauge('fm_orch_credit_spent', "credit the pool's callers spent, in our ledger", [], (g, { status }) =>
    g.set(status.credits.spent)
  )
  return m
}
