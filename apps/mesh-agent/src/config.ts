import { PoolName, SIGNED_PREFIX } from '@frankenstein-mesh/protocol'
import { z } from 'zod'

/**
 * `a`, `a=2`, `fm-invite:…` or `fm-invite:…=2`: a pool (by name, or by its invite) and its weight
 * in the agent's fair share between pools. Invites are checked when the agent starts.
 */
export const PoolWeight = z
  .string()
  .transform((value, ctx): { name?: string; invite?: string; weight: number } => {
    const [spec = '', weight = '1', ...rest] = value.split('=')
    const share = Number(weight)
    const invite = spec.startsWith(`${SIGNED_PREFIX.invite}:`)
    const pool = PoolName.safeParse(spec)
    if (
      (!invite && !pool.success) ||
      rest.length > 0 ||
      !Number.isFinite(share) ||
      share <= 0 ||
      share > 1000
    ) {
      ctx.addIssue({
        code: 'custom',
        message: `"${value.slice(0, 40)}" is not <pool>, <invite> or <pool>=<weight> (weight 0-1000)`
      })
      return z.NEVER
    }
    return invite ? { invite: spec, weight: share } : { name: spec, weight: share }
  })

export type PoolWeight = z.output<typeof PoolWeight>

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  kib: 1024,
  m: 1e6,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1e9,
  gb: 1e9,
  gib: 1024 ** 3,
  t: 1e12,
  tb: 1e12,
  tib: 1024 ** 4
}

/** `8GiB`, `512MB`, `1073741824`: a byte count. */
export const ByteSize = z.string().transform((value, ctx) => {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value)
  const factor = match === null ? undefined : UNITS[(match[2] ?? '').toLowerCase()]
  if (match === null || factor === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not a size like 8GiB, 512MB or 1073741824` })
    return z.NEVER
  }
  return Math.floor(Number(match[1]) * factor)
})

const Multiaddr = z.string().regex(/^\/[a-z0-9]+\//, 'a multiaddr starts with /, like /ip4/0.0.0.0/tcp/4001')

export const JoinOptions = z
  .object({
    pool: z.array(PoolWeight).min(1, 'join at least one pool: --pool <name>'),
    identity: z.string().min(1),
    listen: z.array(Multiaddr).min(1),
    announce: z.array(Multiaddr).default([]),
    bootstrap: z.array(Multiaddr).default([]),
    mdns: z.boolean().default(true),
    memory: ByteSize.optional(),
    threads: z.coerce.number().int().positive().max(1024).optional(),
    rpcServerBin: z.string().min(1).optional(),
    rpcPort: z.coerce.number().int().min(1).max(65535).optional(),
    relayServer: z.boolean().default(false),
    /** Accept the first owner key an orchestrator shows for a pool joined by name: LAN demos only. */
    trustOnFirstUse: z.boolean().default(false),
    relayListen: z.boolean().default(false),
    rendezvousRefresh: z.coerce.number().int().min(1).max(86_400).default(60),
    minSlice: z.coerce.number().min(0).max(86_400).default(300),
    receiptInterval: z.coerce.number().min(1).max(86_400).default(300),
    ledger: z.string().min(1).optional(),
    grace: z.coerce.number().min(0).max(3_600).default(30),
    leaseTtl: z.coerce.number().min(1).max(3_600).default(60),
    idle: z.coerce.number().min(1).max(86_400).default(60),
    /** How pools share rpc-server: one at a time (time slices), side by side (the multiplexer), or by fit. */
    sharing: z.enum(['exclusive', 'concurrent', 'auto']).default('exclusive')
  })
  .refine(
    (o) => new Set(o.pool.map((p) => p.name ?? p.invite)).size === o.pool.length,
    'each pool may be joined once'
  )
  .refine(
    (o) => !(o.rpcServerBin !== undefined && o.rpcPort !== undefined),
    'use --rpc-server-bin or --rpc-port, not both'
  )

export type JoinOptions = z.output<typeof JoinOptions>
