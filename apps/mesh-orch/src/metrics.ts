import type { RpcTunnel } from '@frankenstein-mesh/tunnel'
import { Gauge, Registry } from 'prom-client'
import type { ServingState } from './orchestrator.ts'
import type { OrchestratorStatus } from './serve.ts'

const STATES: readonly ServingState[] = ['waiting-for-workers', 'loading', 'serving', 'draining', 'stopped']

/** The orchestrator's Prometheus metrics (GET /metrics on its HTTP port), read at each scrape. */
export function orchestratorMetrics(sources: {
  status: () => OrchestratorStatus
  queued: () => number
  tunnels: () => readonly RpcTunnel[]
}): Registry {
  const registry = new Registry()
  const gauge = (name: string, help: string, labelNames: string[], read: (g: Gauge) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset()
        read(this)
      }
    })
  gauge('fm_orch_state', 'the serving state (1 for the current one)', ['state'], (g) => {
    const state = sources.status().state
    for (const s of new Set<string>([...STATES, state])) g.set({ state: s }, s === state ? 1 : 0)
  })
  gauge('fm_orch_workers', "workers in the pool's view", [], (g) => g.set(sources.status().workers.length))
  gauge('fm_orch_plan_workers', 'workers in the serving plan', [], (g) => g.set(sources.status().plan.length))
  gauge('fm_orch_worker_rtt_seconds', 'round trip to each worker', ['peer'], (g) => {
    for (const w of sources.status().workers) if (w.rttMs !== null) g.set({ peer: w.peer }, w.rttMs / 1000)
  })
  gauge('fm_orch_requests_in_flight', 'requests being answered', [], (g) =>
    g.set(sources.status().requestsInFlight)
  )
  gauge('fm_orch_requests_queued', 'requests waiting for a generation slot', [], (g) =>
    g.set(sources.queued())
  )
  const perTunnel = (name: string, help: string, pick: (t: RpcTunnel) => number) =>
    gauge(name, help, ['peer'], (g) => {
      for (const t of sources.tunnels()) g.set({ peer: t.peer.toString() }, pick(t))
    })
  const sum = (
    t: RpcTunnel,
    field: 'requestBytes' | 'responseBytes' | 'uploadBytes' | 'computes' | 'computeMs'
  ) => t.traffic().reduce((total, c) => total + c[field], 0)
  perTunnel('fm_orch_tunnel_sent_bytes', 'bytes sent to a worker by the serving plan', (t) =>
    sum(t, 'requestBytes')
  )
  perTunnel('fm_orch_tunnel_received_bytes', 'bytes received from a worker', (t) => sum(t, 'responseBytes'))
  perTunnel('fm_orch_tunnel_loaded_bytes', 'weights and inputs loaded into a worker', (t) =>
    sum(t, 'uploadBytes')
  )
  perTunnel('fm_orch_tunnel_computes', 'graph computes a worker ran', (t) => sum(t, 'computes'))
  perTunnel(
    'fm_orch_tunnel_compute_seconds',
    'time to each compute result, network included',
    (t) => sum(t, 'computeMs') / 1000
  )
  gauge('fm_orch_receipts_countersigned', 'receipts countersigned since start', [], (g) =>
    g.set(sources.status().credits.recorded)
  )
  gauge('fm_orch_receipts_disputed', 'receipts disputed since start', [], (g) =>
    g.set(sources.status().credits.disputes)
  )
  return registry
}
