import type { PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { MeshNode } from './node.ts'

/**
 * libp2p 3 does not dial the peers mDNS (or anything else) discovers: this does, once per peer
 * at a time, and only when not already connected. Returns a function that dials any peer the
 * same way (rendezvous results go through it too).
 */
export function dialDiscovered(node: MeshNode, logger: Logger): (peer: PeerId) => void {
  const log = logger.child({ component: 'discovery' })
  const dialing = new Set<string>()
  const dial = (peer: PeerId): void => {
    const id = peer.toString()
    if (peer.equals(node.peerId) || dialing.has(id) || node.getConnections(peer).length > 0) return
    dialing.add(id)
    node
      .dial(peer, { signal: AbortSignal.timeout(10_000) })
      .then(() => log.debug({ peer: id }, 'dialed discovered peer'))
      .catch((err: unknown) =>
        log.debug({ peer: id, err: (err as Error).message }, 'cannot dial discovered peer')
      )
      .finally(() => dialing.delete(id))
  }
  node.addEventListener('peer:discovery', (evt) => dial(evt.detail.id))
  return dial
}
