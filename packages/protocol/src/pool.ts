import { z } from 'zod'

/** A pool's name: short, lowercase, safe in topics, file names and DHT keys. */
export const PoolName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9-]{0,62}$/,
    'pool names are 1-63 characters of a-z, 0-9 and -, starting with a letter or digit'
  )

export type PoolName = z.infer<typeof PoolName>

/**
 * The string a pool's rendezvous key is derived from (hashed into a CID by the mesh). Workers
 * and orchestrators have separate keys so that each side can find the other.
 */
export function rendezvousKey(pool: PoolName, role: 'worker' | 'orchestrator'): string {
  return `frankenstein-mesh/v1/pool/${pool}/${role}`
}
