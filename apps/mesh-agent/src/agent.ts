import { connectRpc, ensureBinaries, type DeviceMemory } from '@frankenstein-mesh/llama'
import {
  createMeshNode,
  dialDiscovered,
  loadOrCreateIdentity,
  serveAdverts,
  startRendezvous,
  type MeshNode
} from '@frankenstein-mesh/mesh'
import type { PoolName, WorkerAdvert } from '@frankenstein-mesh/protocol'
import { startRpcService } from '@frankenstein-mesh/tunnel'
import type { Logger } from 'pino'
import type { JoinOptions } from './config.ts'
import { RpcServerSupervisor } from './rpc-server-supervisor.ts'

export interface Agent {
  readonly peerId: string
  readonly node: MeshNode
  readonly rpcPort: number
  addresses(): string[]
  stop(): Promise<void>
}

interface LocalRpcServer {
  readonly port: () => number
  readonly rpcProtocol: string
  readonly device: DeviceMemory
  readonly accelerator: WorkerAdvert['accelerator']
  stop(): Promise<void>
}

/** Starts the agent: identity, rpc-server, mesh node, RPC service, adverts, pool rendezvous. */
export async function startAgent(options: JoinOptions, logger: Logger): Promise<Agent> {
  const identity = await loadOrCreateIdentity(options.identity)
  logger.info({ peer: identity.peerId, created: identity.created, path: identity.path }, 'identity')
  const rpc = await localRpcServer(options, logger)
  const node = await createMeshNode({
    privateKey: identity.privateKey,
    listen: options.listen,
    announce: options.announce.length > 0 ? options.announce : undefined,
    bootstrap: options.bootstrap,
    mdns: options.mdns,
    relayServer: options.relayServer,
    listenThroughRelay: options.relayListen
  })
  const pools = options.pool.map((p) => p.name)
  const offered = options.memory ?? Math.floor(rpc.device.free * 0.8)
  const advertFor = (pool: PoolName): WorkerAdvert | undefined =>
    pools.includes(pool)
      ? {
          type: 'advert',
          version: 1,
          pools,
          memory: { offered, free: offered },
          accelerator: rpc.accelerator,
          rpcProtocol: rpc.rpcProtocol,
          lease: { state: 'idle' },
          at: Date.now()
        }
      : undefined
  await serveAdverts(node, advertFor)
  const service = await startRpcService({ node, rpcServerPort: rpc.port, logger })
  const dial = dialDiscovered(node, logger)
  const rendezvous = startRendezvous({
    node,
    pools,
    role: 'worker',
    logger,
    refreshMs: options.rendezvousRefresh * 1000,
    onPeer: (peer) => dial(peer)
  })
  return {
    peerId: identity.peerId,
    node,
    rpcPort: rpc.port(),
    addresses: () => node.getMultiaddrs().map((a) => a.toString()),
    stop: async () => {
      rendezvous.stop()
      await service.stop()
      await node.stop()
      await rpc.stop()
    }
  }
}

async function localRpcServer(options: JoinOptions, logger: Logger): Promise<LocalRpcServer> {
  if (options.rpcPort !== undefined) {
    // An rpc-server someone else runs: we check it answers, and never stop it.
    const port = options.rpcPort
    const client = await connectRpc({ port })
    const device = await client.deviceMemory(0).finally(() => client.close())
    const v = client.version
    return {
      port: () => port,
      rpcProtocol: `${v.major}.${v.minor}.${v.patch}`,
      device,
      accelerator: 'cpu',
      stop: async () => {}
    }
  }
  let binary = options.rpcServerBin
  let accelerator: WorkerAdvert['accelerator'] = 'cpu'
  if (binary === undefined) {
    const bins = await ensureBinaries({ logger })
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
    stop: () => supervisor.stop()
  }
}
