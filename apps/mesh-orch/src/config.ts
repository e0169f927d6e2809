import { PoolName } from '@frankenstein-mesh/protocol'
import { z } from 'zod'

const Multiaddr = z.string().regex(/^\/[a-z0-9]+\//, 'a multiaddr starts with /, like /ip4/0.0.0.0/tcp/4001')

export const ServeOptions = z.object({
  pool: PoolName,
  model: z.string().min(1, 'give the model to serve: --model <file.gguf>'),
  host: z.string().default('127.0.0.1'),
  port: z.coerce.number().int().min(0).max(65535).default(8080),
  identity: z.string().min(1),
  listen: z.array(Multiaddr).min(1),
  announce: z.array(Multiaddr).default([]),
  bootstrap: z.array(Multiaddr).default([]),
  mdns: z.boolean().default(true),
  llamaServerBin: z.string().min(1).optional(),
  ctxSize: z.coerce.number().int().min(128).max(1_048_576).default(4096),
  parallel: z.coerce.number().int().min(1).max(256).default(4),
  queueTimeout: z.coerce.number().min(0).max(3_600).default(60),
  rendezvousRefresh: z.coerce.number().int().min(1).max(86_400).default(60),
  workerExpiry: z.coerce.number().min(1).max(3_600).default(15),
  betterPlanAfter: z.coerce.number().min(0).max(86_400).default(300),
  poolKey: z.string().min(1).optional(),
  credential: z.string().max(20_000).optional(),
  admission: z.enum(['open', 'invite']).default('invite'),
  ledger: z.string().min(1).optional(),
  anonymous: z.enum(['allow', 'refuse']).default('allow')
})

export type ServeOptions = z.output<typeof ServeOptions>
