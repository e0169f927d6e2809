import type { Libp2p, PeerId } from '@libp2p/interface'
import {
  AdvertRequest,
  MAX_ADVERT_BYTES,
  PROTOCOL,
  WorkerAdvert,
  type PoolName
} from '@frankenstein-mesh/protocol'
import { request, serveRequests } from './control.ts'

/**
 * The agent's side: answer advert requests with what `advertFor` says about the asked pool, or
 * refuse (reset) when the worker does not serve it.
 */
export async function serveAdverts(
  node: Libp2p,
  advertFor: (pool: PoolName) => WorkerAdvert | undefined
): Promise<void> {
  await serveRequests(node, PROTOCOL.advert, AdvertRequest, (req) => advertFor(req.pool), {
    maxBytes: MAX_ADVERT_BYTES
  })
}

/** The orchestrator's side: ask a peer what it offers to `pool`. */
export async function fetchAdvert(
  node: Libp2p,
  peer: PeerId,
  pool: PoolName,
  options: { timeoutMs?: number | undefined; signal?: AbortSignal | undefined } = {}
): Promise<WorkerAdvert> {
  const message: AdvertRequest = { type: 'advert-request', version: 1, pool }
  return await request(node, peer, PROTOCOL.advert, message, WorkerAdvert, {
    maxBytes: MAX_ADVERT_BYTES,
    ...options
  })
}
