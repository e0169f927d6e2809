/**
 * The orchestrator's end of the tunnels as its own process, for benches: dials each agent
 * address given (`/ip4/.../tcp/.../p2p/<id>`), opens one RPC tunnel per agent, prints
 * `{"endpoints":[...]}` on stdout and runs until SIGTERM.
 */
import { createLogger } from '@frankenstein-mesh/llama'
import {
  acquireLease,
  createMeshNode,
  tuneGcForBulkTraffic,
  ephemeralPrivateKey,
  multiaddr,
  peerIdFromString
} from '@frankenstein-mesh/mesh'
import { startRpcTunnel, type RpcTunnel } from '@frankenstein-mesh/tunnel'
import { credentialFor } from '../../test/fixtures/credentials.ts'

const logger = createLogger({ name: 'orch-tunnels', level: 'warn' })
const listen = process.env['FM_LISTEN'] ?? '/ip4/127.0.0.1/tcp/0'
tuneGcForBulkTraffic() // as mesh-orch does: the figures are the real processes'
const node = await createMeshNode({ privateKey: await ephemeralPrivateKey(), listen: [listen] })
const tunnels: RpcTunnel[] = []
for (const address of process.argv.slice(2)) {
  const ma = multiaddr(address)
  await node.dial(ma, { signal: AbortSignal.timeout(20_000) })
  const peer = peerIdFromString(address.split('/p2p/').at(-1) ?? '')
  await acquireLease({ node, peer, pool: 'bench', credential: await credentialFor(node, 'bench'), logger })
  tunnels.push(await startRpcTunnel({ node, peer, logger }))
}
console.log(JSON.stringify({ endpoints: tunnels.map((t) => t.endpoint) }))
process.on('SIGTERM', () => {
  void Promise.all(tunnels.map((t) => t.close()))
    .then(() => node.stop())
    .finally(() => process.exit(0))
})
