/** Versioned libp2p protocol ids. A breaking change gets a new major version, never an edit. */
export const PROTOCOL = {
  /** One llama.cpp RPC connection (llama-server to rpc-server) per stream. */
  rpc: '/frankenstein/rpc/1.0.0',
  /** Ask a worker for its capability advert. */
  advert: '/frankenstein/advert/1.0.0',
  /** Ask for, renew and release a lease on a worker's rpc-server; hear of revocations. */
  lease: '/frankenstein/lease/1.0.0',
  /** An orchestrator relays the pool owner's signed revocations to a worker. */
  poolUpdate: '/frankenstein/pool-update/1.0.0'
} as const

/** Names of the mesh's private DHT and its rendezvous keys. */
export const DHT_PROTOCOL = '/frankenstein/kad/1.0.0'
