import type { TrafficTotals } from '@frankenstein-mesh/tunnel'

/** What `mesh-agent status` shows; served as JSON on the agent's control socket. */
export interface AgentStatus {
  readonly peerId: string
  readonly addresses: readonly string[]
  readonly pools: ReadonlyArray<{
    readonly name: string
    readonly weight: number
    /** Decayed time the pool has held the worker: what fairness is judged on. */
    readonly usageMs: number
    readonly traffic: PoolTraffic
  }>
  readonly lease: {
    readonly holder: {
      readonly pool: string
      readonly peer: string
      readonly id: number
      readonly grantedAt: number
      readonly revokeBy?: number | undefined
    } | null
    readonly waiting: readonly string[]
    /** Every holder: several at once with concurrent sharing. */
    readonly holders: ReadonlyArray<{
      readonly pool: string
      readonly peer: string
      readonly id: number
      readonly grantedAt: number
      readonly quotaBytes?: number | undefined
    }>
  }
  /** How pools share rpc-server, and with concurrent sharing, the multiplexer's sessions. */
  readonly sharing: {
    /** What `--sharing` asked for; with `auto`, `mode` is the one in force now. */
    readonly setting: 'exclusive' | 'concurrent' | 'auto'
    readonly mode: 'exclusive' | 'concurrent'
    readonly multiplexer?: {
      readonly up: boolean
      /** Sessions since the start, those dropped for breaking isolation, graph restores, refused allocations. */
      readonly sessions: number
      readonly dropped: number
      readonly graphRestores: number
      readonly refusedAllocs: number
      /** Live sessions per pool, the buffer bytes they hold, the pool's quota. */
      readonly pools: ReadonlyArray<{
        readonly pool: string
        readonly sessions: number
        readonly heldBytes: number
        readonly quotaBytes?: number | undefined
      }>
    }
  }
  readonly rpcServer: {
    readonly port: number
    /** Process id while it runs (absent for an rpc-server we were pointed at). */
    readonly pid?: number | undefined
    readonly state: 'up' | 'restarting' | 'external'
    /** Where it listens, as the kernel reports it: loopback only, or the agent would not use it. */
    readonly listening?: readonly string[] | undefined
    /** Its resident memory (Linux), which drops back when a lease ends. */
    readonly rssBytes?: number | undefined
    readonly restarts: number
    readonly lastLoss: string | null
  }
  readonly rpcConnections: number
  /** libp2p connections and the streams open on them (all protocols): a leak shows as growth. */
  readonly mesh: { readonly connections: number; readonly streams: number }
  /** Receipts recorded and disputed since start, and the ledger's balances per pool. */
  readonly credits: {
    readonly recorded: number
    readonly disputes: number
    readonly balances: ReadonlyArray<{ pool: string; credit: number; receipts: number }>
  }
}

/** A pool's RPC traffic through this agent: its ended connections and its holders' open ones. */
export type PoolTraffic = TrafficTotals

/** The status for people: a few lines, nothing they did not ask for. */
export function formatStatus(status: AgentStatus): string {
  const mib = (n: number): string => `${(n / 1024 ** 2).toFixed(1)} MiB`
  const holder = status.lease.holder
  const lines = [
    `peer      ${status.peerId}`,
    ...status.addresses.map((a, i) => `${i === 0 ? 'addresses' : '         '} ${a}`),
    `rpc-server 127.0.0.1:${status.rpcServer.port} ${status.rpcServer.state}, ${status.rpcServer.restarts} restarts${status.rpcServer.lastLoss === null ? '' : `, last lost: ${status.rpcServer.lastLoss}`}`,
    `sharing   ${status.sharing.mode}${status.sharing.setting === 'auto' ? ' (auto)' : ''}${muxLine(status.sharing.multiplexer, mib)}`,
    status.lease.holders.length > 1
      ? `leases    ${status.lease.holders.map((h) => `${h.id} held by pool ${h.pool} (${h.peer})`).join('; ')}`
      : holder === null
        ? 'lease     none'
        : `lease     ${holder.id} held by pool ${holder.pool} (${holder.peer}) since ${new Date(holder.grantedAt).toISOString()}${holder.revokeBy === undefined ? '' : `, revoked: yield by ${new Date(holder.revokeBy).toISOString()}`}`,
    `waiting   ${status.lease.waiting.length === 0 ? 'nobody' : status.lease.waiting.join(', ')}`,
    `mesh      ${status.mesh.connections} connections, ${status.mesh.streams} streams open`,
    'pools:'
  ]
  for (const pool of status.pools) {
    const t = pool.traffic
    lines.push(
      `  ${pool.name} (weight ${pool.weight}): held ${(pool.usageMs / 60_000).toFixed(1)} min (decayed), ${t.connections} connections, ${mib(t.uploadBytes)} loaded, ${t.computes} computes (${(t.computeMs / 1000).toFixed(1)} s), ${t.memoryGiBs.toFixed(1)} GiB-s held`
    )
  }
  const c = status.credits
  lines.push(
    `credits   ${c.recorded} receipts recorded, ${c.disputes} disputed since start${c.balances.map((b) => `; ${b.pool}: ${b.credit.toFixed(4)}`).join('')}`
  )
  return lines.join('\n')
}

function muxLine(mux: AgentStatus['sharing']['multiplexer'], mib: (n: number) => string): string {
  if (mux === undefined) return ''
  const pools = mux.pools.map(
    (p) =>
      `${p.pool}: ${p.sessions} sessions, ${mib(p.heldBytes)}${p.quotaBytes === undefined ? '' : ` of ${mib(p.quotaBytes)}`}`
  )
  return `, multiplexer ${mux.up ? 'up' : 'down'}${pools.length === 0 ? '' : ` (${pools.join('; ')})`}, ${mux.dropped} sessions dropped, ${mux.refusedAllocs} allocations refused`
}
