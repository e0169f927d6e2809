import {
  connectRpc,
  ensureRpcServer,
  listenersOnPort,
  residentBytes,
  type DeviceMemory
} from '@frankenstein-mesh/llama'
import {
  createMeshNode,
  dialDiscovered,
  loadOrCreateIdentity,
  serveAdverts,
  serveRequests,
  startRendezvous,
  type MeshNode
} from '@frankenstein-mesh/mesh'
import {
  MAX_POOL_UPDATE_BYTES,
  PROTOCOL,
  PoolUpdate,
  type PoolName,
  type WorkerAdvert
} from '@frankenstein-mesh/protocol'
import { Ledger } from '@frankenstein-mesh/credits'
import { NO_TRAFFIC, addTraffic, startRpcService, type RpcTraffic } from '@frankenstein-mesh/tunnel'
import type { Logger } from 'pino'
import type { AgentStatus, PoolTraffic } from './agent-status.ts'
import type { JoinOptions } from './config.ts'
import { AgentError } from './errors.ts'
import { AutoScheduler } from './auto-scheduler.ts'
import { ConcurrentScheduler } from './concurrent-scheduler.ts'
import type { LeasePolicy } from './lease-policy.ts'
import { LeaseScheduler } from './lease-scheduler.ts'
import { MuxHost } from './mux-host.ts'
import { LeaseService } from './lease-service.ts'
import { PoolAuthority, invitesFile, resolveMemberships } from './memberships.ts'
import { ReceiptClerk } from './receipts.ts'
import { RpcServerSupervisor } from './rpc-server-supervisor.ts'

export interface Agent {
  readonly peerId: string
  readonly node: MeshNode
  readonly leases: LeaseService
  status(): AgentStatus
  readonly rpcPort: number
  addresses(): string[]
  stop(): Promise<void>
}

interface LocalRpcServer {
  readonly port: () => number
  readonly rpcProtocol: string
  readonly device: DeviceMemory
  readonly accelerator: WorkerAdvert['accelerator']
  /** Loss and restart of an rpc-server we supervise (none for one we were pointed at). */
  readonly events?: RpcServerSupervisor | undefined
  state(): AgentStatus['rpcServer']
  stop(): Promise<void>
}

/** Starts the agent: identity, rpc-server, mesh node, RPC service, adverts, pool rendezvous. */
export async function startAgent(options: JoinOptions, logger: Logger): Promise<Agent> {
  const identity = await loadOrCreateIdentity(options.identity)
  logger.info({ peer: identity.peerId, created: identity.created, path: identity.path }, 'identity')
  const memberships = await resolveMemberships(
    options.pool,
    invitesFile(options.identity),
    options.trustOnFirstUse
  )
  const authority = new PoolAuthority(memberships, logger)
  const rpc = await localRpcServer(options, logger)
  const node = await createMeshNode({
    privateKey: identity.privateKey,
    listen: options.listen,
    announce: options.announce.length > 0 ? options.announce : undefined,
    bootstrap: [...new Set([...options.bootstrap, ...memberships.flatMap((m) => m.bootstrap)])],
    mdns: options.mdns,
    relayServer: options.relayServer,
    listenThroughRelay: options.relayListen
  })
  const pools = memberships.map((m) => m.name)
  const offered = options.memory ?? Math.floor(rpc.device.free * 0.8)
  const scheduler: LeasePolicy =
    options.sharing === 'auto'
      ? new AutoScheduler({
          pools: memberships,
          now: Date.now,
          offeredBytes: offered,
          minSliceMs: options.minSlice * 1000,
          graceMs: options.grace * 1000,
          leaseTtlMs: options.leaseTtl * 1000,
          idleMs: options.idle * 1000
        })
      : options.sharing === 'concurrent'
        ? new ConcurrentScheduler({
            pools: memberships,
            now: Date.now,
            offeredBytes: offered,
            leaseTtlMs: options.leaseTtl * 1000
          })
        : new LeaseScheduler({
            pools: memberships,
            now: Date.now,
            minSliceMs: options.minSlice * 1000,
            graceMs: options.grace * 1000,
            leaseTtlMs: options.leaseTtl * 1000,
            idleMs: options.idle * 1000
          })
  // Concurrent (or auto) sharing: the multiplexer is rpc-server's one client, holders' streams its sessions;
  // with auto, exclusive holders' sessions go through it too (their quota: all the memory offered).
  const mux =
    options.sharing !== 'exclusive'
      ? new MuxHost({
          upstreamPort: rpc.port,
          pools,
          quota: (p) => scheduler.quota(p),
          weight: (p) => memberships.find((m) => m.name === p)?.weight ?? 1,
          logger,
          reconnect: () => rpc.events === undefined || rpc.state().state === 'up'
        })
      : undefined
  await mux?.start()
  const ledger = Ledger.open(options.ledger ?? `${options.identity}.ledger.sqlite`)
  let liveTraffic: (peer: string) => RpcTraffic[] = () => []
  const clerk = new ReceiptClerk({
    key: identity.privateKey,
    self: identity.peerId,
    ledger,
    live: (peer) => liveTraffic(peer),
    logger
  })
  // Only the lease holder's RPC streams reach rpc-server; when its lease ends, they are closed.
  const leases = new LeaseService({
    receipts: { clerk, intervalMs: options.receiptInterval * 1000 },
    node,
    scheduler,
    logger,
    ttlMs: options.leaseTtl * 1000,
    minSliceMs: options.minSlice * 1000,
    authorize: (pool, credential, peer) => authority.authorize(pool, credential, peer)
  })
  // The owner's revocations, relayed by any orchestrator of the pool, end live sessions at once.
  await serveRequests(
    node,
    PROTOCOL.poolUpdate,
    PoolUpdate,
    async (update) => {
      const applied = await authority.applyRevocations(update.revocations).catch(() => undefined)
      if (applied !== undefined) leases.revoke(applied.pool, applied.serials)
      return { type: 'pool-update-ack', version: 1 }
    },
    { maxBytes: MAX_POOL_UPDATE_BYTES }
  )
  const traffic = new Map<string, PoolTraffic>()
  // With concurrent sharing a holder's streams become sessions of its pool in the multiplexer.
  const toMux = (peer: string) => {
    const pool = leases.poolOf(peer)
    return pool === undefined ? undefined : mux?.attacher(pool, `peer:${peer}`)
  }
  const service = await startRpcService({
    node,
    rpcServerPort: () => rpc.port(),
    attach: mux === undefined ? undefined : toMux,
    logger,
    authorize: (connection) => {
      const peer = connection.remotePeer.toString()
      return leases.holds(peer) && (mux === undefined || toMux(peer) !== undefined)
    },
    onActivity: (peer) => {
      const pool = leases.poolOf(peer)
      if (pool !== undefined) scheduler.activity(pool)
    },
    onEnd: (peer, one) => {
      clerk.connectionEnded(peer, one)
      const pool = leases.poolOf(peer)
      if (pool !== undefined) traffic.set(pool, addTraffic(traffic.get(pool) ?? NO_TRAFFIC, one))
    }
  })
  liveTraffic = (peer) => service.live(peer)
  leases.on('ended', (_lease, peer) => service.closePeer(peer))
  rpc.events?.on('lost', (reason) => {
    // Who held it when it died: a client can make rpc-server abort (docs/security.md).
    for (const holder of leases.holders)
      logger.warn({ reason, pool: holder.pool, peer: holder.peer }, 'rpc-server lost during a lease')
    leases.rpcServerState('lost')
  })
  rpc.events?.on('restored', () => {
    // The holders hear of it once the multiplexer runs again, so their new sessions find it.
    void (mux?.restart() ?? Promise.resolve()).then(() => leases.rpcServerState('restored'))
  })
  await leases.start()
  const advertFor = (pool: PoolName): WorkerAdvert | undefined => {
    if (!pools.includes(pool)) return undefined
    // Concurrent sharing: each pool sees its quota, and the worker as leased only by itself.
    const quota = options.sharing === 'concurrent' ? scheduler.quota(pool) : undefined
    const holder = leases.holders.find((h) => h.pool === pool || h.lease.sharing !== 'concurrent')
    const lent = quota ?? offered
    return {
      type: 'advert',
      version: 1,
      pools,
      memory: { offered: lent, free: holder === undefined ? lent : 0 },
      accelerator: rpc.accelerator,
      rpcProtocol: rpc.rpcProtocol,
      lease: holder === undefined ? { state: 'idle' } : { state: 'leased', pool: holder.pool },
      at: Date.now(),
      membership: { owner: authority.membership(pool)?.owner, invite: authority.membership(pool)?.invite }
    }
  }
  await serveAdverts(node, advertFor)
  const dial = dialDiscovered(node, logger)
  const rendezvous = startRendezvous({
    node,
    pools,
    role: 'worker',
    logger,
    refreshMs: options.rendezvousRefresh * 1000,
    onPeer: (peer) => dial(peer)
  })
  // A pool's traffic: its ended connections, and the holder's open ones as of now.
  const withLive = (pool: string): PoolTraffic => {
    const ended = traffic.get(pool) ?? NO_TRAFFIC
    return leases.holders
      .filter((h) => h.pool === pool)
      .flatMap((h) => service.live(h.peer))
      .reduce(addTraffic, ended)
  }
  const status = (): AgentStatus => {
    const usage = scheduler.usage()
    const holder = leases.holder
    return {
      peerId: identity.peerId,
      addresses: node.getMultiaddrs().map((a) => a.toString()),
      pools: memberships.map((p) => ({
        ...p,
        usageMs: usage[p.name] ?? 0,
        traffic: withLive(p.name)
      })),
      lease: {
        holder:
          holder === undefined
            ? null
            : {
                pool: holder.pool,
                peer: holder.peer,
                id: holder.lease.id,
                grantedAt: holder.lease.grantedAt,
                revokeBy: holder.lease.revokeBy
              },
        waiting: leases.waiting,
        holders: leases.holders.map((h) => ({
          pool: h.pool,
          peer: h.peer,
          id: h.lease.id,
          grantedAt: h.lease.grantedAt,
          quotaBytes: h.lease.quotaBytes
        }))
      },
      sharing: sharingStatus(options.sharing, scheduler.sharing, mux),
      rpcServer: rpc.state(),
      rpcConnections: service.open,
      mesh: meshCounts(node),
      credits: { recorded: clerk.recorded, disputes: clerk.disputes, balances: ledger.balances() }
    }
  }
  return {
    peerId: identity.peerId,
    node,
    status,
    rpcPort: rpc.port(),
    addresses: () => node.getMultiaddrs().map((a) => a.toString()),
    leases,
    stop: async () => {
      rendezvous.stop()
      await leases.stop(options.grace * 1000)
      await service.stop()
      mux?.stop()
      await node.stop()
      await rpc.stop()
      ledger.close()
    }
  }
}

function sharingStatus(
  setting: AgentStatus['sharing']['setting'],
  mode: AgentStatus['sharing']['mode'],
  mux: MuxHost | undefined
): AgentStatus['sharing'] {
  if (mux === undefined) return { setting, mode }
  const view = mux.view()
  return {
    setting,
    mode,
    multiplexer: {
      up: view.up,
      ...view.stats,
      pools: view.pools.map((p) => ({
        pool: p.pool,
        sessions: p.sessions,
        heldBytes: p.heldBytes,
        quotaBytes: p.quota
      }))
    }
  }
}

async function localRpcServer(options: JoinOptions, logger: Logger): Promise<LocalRpcServer> {
  if (options.rpcPort !== undefined) {
    // An rpc-server someone else runs: we check it answers, and never stop it.
    const port = options.rpcPort
    const exposed = (await listenersOnPort(port))?.filter((s) => !s.loopback) ?? []
    if (exposed.length > 0)
      throw new AgentError(
        'ERR_RPC_EXPOSED',
        `the rpc-server on port ${port} also listens on ${exposed.map((s) => s.address).join(', ')}: start it with --host 127.0.0.1`
      )
    const client = await connectRpc({ port })
    const device = await client.deviceMemory(0).finally(() => client.close())
    const v = client.version
    return {
      port: () => port,
      rpcProtocol: `${v.major}.${v.minor}.${v.patch}`,
      device,
      accelerator: 'cpu',
      state: () => ({ port, state: 'external', restarts: 0, lastLoss: null }),
      stop: async () => {}
    }
  }
  let binary = options.rpcServerBin
  let accelerator: WorkerAdvert['accelerator'] = 'cpu'
  if (binary === undefined) {
    const bins = await ensureRpcServer({ logger })
    binary = bins.rpcServer
    accelerator = bins.build?.backend ?? 'cpu'
  }
  const supervisor = new RpcServerSupervisor({ binary, logger, threads: options.threads })
  const server = await supervisor.start()
  const v = server.version
  return {
    port: () => supervisor.port,
    rpcProtocol: `${v.major}.${v.minor}.${v.patch}`,
    device: server.devices[0] ?? { free: 0, total: 0 },
    accelerator,
    events: supervisor,
    state: () => ({
      port: supervisor.port,
      pid: supervisor.current?.process.pid,
      state: supervisor.current === undefined ? 'restarting' : 'up',
      listening: supervisor.current?.listening,
      rssBytes: residentBytes(supervisor.current?.process.pid),
      restarts: supervisor.restarts,
      lastLoss: supervisor.lastLoss ?? null
    }),
    stop: () => supervisor.stop()
  }
}

function meshCounts(node: MeshNode): AgentStatus['mesh'] {
  const connections = node.getConnections()
  return { connections: connections.length, streams: connections.reduce((n, c) => n + c.streams.length, 0) }
}
