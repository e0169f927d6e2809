import type { PeerId } from '@libp2p/interface'
import { rendezvousKey, type PoolName } from '@frankenstein-mesh/protocol'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import type { Logger } from 'pino'
import type { MeshNode } from './node.ts'

export type MeshRole = 'worker' | 'orchestrator'

/** The DHT key a pool's members of one role provide: a CID of the rendezvous string. */
export async function rendezvousCid(pool: PoolName, role: MeshRole): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(rendezvousKey(pool, role))))
}

export interface RendezvousInit {
  readonly node: MeshNode
  readonly pools: readonly PoolName[]
  /** What we are in these pools: we provide our role's key and look up the other role's. */
  readonly role: MeshRole
  readonly logger: Logger
  /** How often to re-provide and to look for peers (records expire on the DHT nodes). */
  readonly refreshMs?: number | undefined
  /** A peer of the other role was found for `pool`. */
  readonly onPeer: (peer: PeerId, pool: PoolName) => void
}

export interface Rendezvous {
  /** Provide and look up once now (also done every refresh). */
  refresh(): Promise<void>
  stop(): void
}

/**
 * Meeting a pool's other members across networks: through the DHT, each side provides the
 * pool's key for its role and finds the providers of the other role's key. Runs until stopped,
 * every `refreshMs`; a DHT with no peers yet is not an error, just nothing found.
 */
export function startRendezvous(init: RendezvousInit): Rendezvous {
  const log = init.logger.child({ component: 'rendezvous', role: init.role })
  const other: MeshRole = init.role === 'worker' ? 'orchestrator' : 'worker'
  const controller = new AbortController()
  let running: Promise<void> | undefined

  const once = async (pool: PoolName): Promise<void> => {
    const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(30_000)])
    try {
      await init.node.contentRouting.provide(await rendezvousCid(pool, init.role), { signal })
    } catch (err) {
      log.debug({ pool, err: (err as Error).message }, 'provide failed')
    }
    try {
      for await (const provider of init.node.contentRouting.findProviders(await rendezvousCid(pool, other), {
        signal
      })) {
        if (!provider.id.equals(init.node.peerId)) init.onPeer(provider.id, pool)
      }
    } catch (err) {
      log.debug({ pool, err: (err as Error).message }, 'find providers failed')
    }
  }
  const refresh = async (): Promise<void> => {
    running ??= Promise.all(init.pools.map(once)).then(() => {
      running = undefined
    })
    await running
  }
  const timer = setInterval(() => void refresh(), init.refreshMs ?? 60_000)
  void refresh()
  return {
    refresh,
    stop: () => {
      clearInterval(timer)
      controller.abort()
    }
  }
}
