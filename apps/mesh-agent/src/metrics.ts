import { scrapedMetrics, type ScrapedMetrics } from '@frankenstein-mesh/control'
import type { AgentStatus } from './agent-status.ts'

/**
 * The agent's Prometheus metrics, read from its status at each scrape (served on its local
 * control socket: `mesh-agent metrics`, or `curl --unix-socket <identity>.sock localhost/metrics`).
 */
export function agentMetrics(status: () => AgentStatus): ScrapedMetrics<AgentStatus> {
  const m = scrapedMetrics(status)
  const gauge = m.gauge
  gauge('fm_agent_rpc_server_up', 'rpc-server answers (1) or is being restarted (0)', [], (g, s) =>
    g.set(s.rpcServer.state === 'restarting' ? 0 : 1)
  )
  gauge('fm_agent_rpc_server_restarts', 'rpc-server restarts since the agent started', [], (g, s) =>
    g.set(s.rpcServer.restarts)
  )
  gauge('fm_agent_rpc_server_resident_bytes', "rpc-server's resident memory", [], (g, s) => {
    const rss = s.rpcServer.rssBytes
    if (rss !== undefined) g.set(rss)
  })
  gauge('fm_agent_rpc_connections', 'RPC connections open through the agent', [], (g, s) =>
    g.set(s.rpcConnections)
  )
  gauge(
    'fm_agent_sharing_concurrent',
    'pools share rpc-server concurrently (1) or one at a time (0)',
    [],
    (g, s) => g.set(s.sharing.mode === 'concurrent' ? 1 : 0)
  )
  gauge('fm_agent_mux_sessions', "a pool's RPC sessions open in the multiplexer", ['pool'], (g, s) => {
    for (const p of s.sharing.multiplexer?.pools ?? []) g.set({ pool: p.pool }, p.sessions)
  })
  gauge(
    'fm_agent_mux_held_bytes',
    'buffer bytes a pool holds in rpc-server through the multiplexer',
    ['pool'],
    (g, s) => {
      for (const p of s.sharing.multiplexer?.pools ?? []) g.set({ pool: p.pool }, p.heldBytes)
    }
  )
  gauge('fm_agent_mesh_streams', 'libp2p streams open on all connections', [], (g, s) =>
    g.set(s.mesh.streams)
  )
  gauge('fm_agent_lease_held', 'the pool holding the worker (1), by pool', ['pool'], (g, s) => {
    for (const h of s.lease.holders) g.set({ pool: h.pool }, 1)
  })
  gauge('fm_agent_pools_waiting', 'lease requests waiting in line', [], (g, s) =>
    g.set(s.lease.waiting.length)
  )
  const traffic = (
    name: string,
    help: string,
    pick: (t: AgentStatus['pools'][number]['traffic']) => number
  ) =>
    gauge(name, help, ['pool'], (g, s) => {
      for (const pool of s.pools) g.set({ pool: pool.name }, pick(pool.traffic))
    })
  traffic('fm_agent_upload_bytes', 'weight and input bytes a pool sent to rpc-server', (t) => t.uploadBytes)
  traffic('fm_agent_computes', 'graph computes run for a pool', (t) => t.computes)
  traffic('fm_agent_compute_seconds', 'time rpc-server spent computing for a pool', (t) => t.computeMs / 1000)
  traffic('fm_agent_memory_gib_seconds', 'memory a pool held over time', (t) => t.memoryGiBs)
  gauge('fm_agent_receipts_recorded', 'receipts countersigned and recorded since start', [], (g, s) =>
    g.set(s.credits.recorded)
  )
  gauge('fm_agent_receipts_disputed', 'receipts disputed or unrecorded since start', [], (g, s) =>
    g.set(s.credits.disputes)
  )
  gauge('fm_agent_credit', 'credit in the ledger, by pool', ['pool'], (g, s) => {
    for (const b of s.credits.balances) g.set({ pool: b.pool }, b.credit)
  })
  return m
}
