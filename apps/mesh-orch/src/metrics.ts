import { scrapedMetrics, type ScrapedMetrics } from '@frankenstein-mesh/control'
import type { RpcTraffic, RpcTunnel } from '@frankenstein-mesh/tunnel'
import type { ServingState } from './orchestrator.ts'
import type { OrchestratorStatus } from './serve.ts'

const STATES: readonly ServingState[] = ['waiting-for-workers', 'loading', 'serving', 'draining', 'stopped']

interface Snapshot {
  readonly status: OrchestratorStatus
  readonly queued: number
  /** Per worker of the serving plan: its tunnel's counters, summed over connections. */
  readonly tunnels: ReadonlyArray<{ peer: string; traffic: Omit<RpcTraffic, 'commands'> }>
}

function totals(tunnel: RpcTunnel): Omit<RpcTraffic, 'commands'> {
  let sum = {
    requestBytes: 0,
    responseBytes: 0,
    uploadBytes: 0,
    computes: 0,
    computeMs: 0,
    heldBytes: 0,
    memoryGiBs: 0
  }
  for (const c of tunnel.traffic())
    sum = {
      requestBytes: sum.requestBytes + c.requestBytes,
      responseBytes: sum.responseBytes + c.responseBytes,
      uploadBytes: sum.uploadBytes + c.uploadBytes,
      computes: sum.computes + c.computes,
      computeMs: sum.computeMs + c.computeMs,
      heldBytes: sum.heldBytes + c.heldBytes,
      memoryGiBs: sum.memoryGiBs + c.memoryGiBs
    }
  return sum
}

/** The orchestrator's Prometheus metrics (GET /metrics on its HTTP port), from one snapshot a scrape. */
export function orchestratorMetrics(sources: {
  status: () => OrchestratorStatus
  queued: () => number
  tunnels: () => readonly RpcTunnel[]
}): ScrapedMetrics<Snapshot> {
  const m = scrapedMetrics<Snapshot>(() => ({
    status: sources.status(),
    queued: sources.queued(),
    tunnels: sources.tunnels().map((t) => ({ peer: t.peer.toString(), traffic: totals(t) }))
  }))
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
  m.gauge('fm_orch_requests_queued', 'requests waiting for a generation slot', [], (g, s) => g.set(s.queued))
  const perTunnel = (name: string, help: string, pick: (t: Omit<RpcTraffic, 'commands'>) => number) =>
    m.gauge(name, help, ['peer'], (g, { tunnels }) => {
      for (const t of tunnels) g.set({ peer: t.peer }, pick(t.traffic))
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
  return m
}
