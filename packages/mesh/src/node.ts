import { autoNAT } from '@libp2p/autonat'
import { bootstrap } from '@libp2p/bootstrap'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { dcutr } from '@libp2p/dcutr'
import { identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { mdns } from '@libp2p/mdns'
import { ping, type Ping } from '@libp2p/ping'
import { yamux } from '@libp2p/yamux'
import { DHT_PROTOCOL } from '@frankenstein-mesh/protocol'
import { createLibp2p } from 'libp2p'
import { MeshError } from './errors.ts'
import { leanNoise } from './lean-noise.ts'
import { oneWriteTcp } from './one-write-tcp.ts'

export interface MeshNodeInit {
  readonly privateKey: PrivateKey
  /** Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/4001`. */
  readonly listen: readonly string[]
  /** Addresses to tell peers instead of the ones we listen on (a port forward, a relay in front). */
  readonly announce?: readonly string[] | undefined
  /** Multiaddrs with `/p2p/<id>` of peers to join the mesh through (DHT, relay). */
  readonly bootstrap?: readonly string[] | undefined
  /** Find peers on the local network by multicast DNS. */
  readonly mdns?: boolean | undefined
  readonly mdnsIntervalMs?: number | undefined
  /** Offer circuit relay v2 to peers that cannot be dialed directly. */
  readonly relayServer?: boolean | undefined
  /** Also listen through a relay (`/p2p-circuit`), for nodes behind NAT. */
  readonly listenThroughRelay?: boolean | undefined
  /** Seconds a provider record stays valid on the DHT nodes we run. */
  readonly providerValiditySeconds?: number | undefined
}

export interface MeshServices {
  identify: ReturnType<ReturnType<typeof identify>>
  ping: Ping
  dht: KadDHT
  [key: string]: unknown
}

export type MeshNode = Libp2p<MeshServices>

/** The mDNS service name: keeps our nodes apart from other libp2p applications on a LAN. */
export const MDNS_SERVICE_TAG = '_frankenstein-mesh._udp.local'

/**
 * Bulk RPC traffic needs a large Yamux window from the start (the default 256 KiB only grows
 * once the muxer knows the RTT; a load then crawled at ~100 MB/s), and the read buffer must hold
 * a whole window: a paused stream otherwise overflows and is reset (StreamBufferError).
 */
const STREAM_WINDOW = 16 * 1024 * 1024
/**
 * Yamux data frames of up to 256 KiB (default 64 KiB): the tunnel coalesces reads into larger
 * sends, and each frame costs a header, an event and a write. Noise still encrypts in 64 KiB
 * messages. Larger frames measured no faster and would hold other streams back longer.
 */
const FRAME_SIZE = 256 * 1024

/**
 * Assembles a libp2p 3 node: TCP, Noise, Yamux, identify, ping, a private Kademlia DHT (server
 * mode, private addresses kept), optional mDNS and bootstrap discovery, AutoNAT, DCUtR, and
 * circuit relay v2 as client (always) and server (on request).
 */
export async function createMeshNode(init: MeshNodeInit): Promise<MeshNode> {
  const discovery = [
    ...(init.mdns === true
      ? [mdns({ serviceTag: MDNS_SERVICE_TAG, interval: init.mdnsIntervalMs ?? 10_000 })]
      : []),
    ...(init.bootstrap !== undefined && init.bootstrap.length > 0
      ? [bootstrap({ list: [...init.bootstrap], timeout: 100 })]
      : [])
  ]
  const listen = [...init.listen]
  if (init.listenThroughRelay === true) listen.push('/p2p-circuit')
  const validity = init.providerValiditySeconds ?? 600
  try {
    return await createLibp2p({
      privateKey: init.privateKey,
      addresses: { listen, ...(init.announce === undefined ? {} : { announce: [...init.announce] }) },
      transports: [oneWriteTcp(), circuitRelayTransport()],
      connectionEncrypters: [leanNoise()],
      streamMuxers: [
        yamux({
          maxMessageSize: FRAME_SIZE,
          streamOptions: {
            initialStreamWindowSize: STREAM_WINDOW,
            maxStreamWindowSize: STREAM_WINDOW,
            maxReadBufferLength: 2 * STREAM_WINDOW
          }
        })
      ],
      peerDiscovery: discovery,
      services: {
        identify: identify(),
        ping: ping(),
        dht: kadDHT({
          protocol: DHT_PROTOCOL,
          clientMode: false,
          peerInfoMapper: passthroughMapper,
          providers: { provideValidity: validity, cleanupInterval: Math.max(10, Math.floor(validity / 5)) }
        }),
        autoNAT: autoNAT(),
        dcutr: dcutr(),
        // RPC is bulk traffic: the default relayed-connection limit (128 KiB, 2 minutes) would cut
        // a model load short. A node relays only when its owner asked for it.
        ...(init.relayServer === true
          ? { relay: circuitRelayServer({ reservations: { applyDefaultLimit: false } }) }
          : {})
      }
    })
  } catch (err) {
    throw new MeshError('ERR_MESH_START', `cannot start the mesh node: ${(err as Error).message}`, {
      cause: err
    })
  }
}
