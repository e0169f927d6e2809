import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import {
  PoolAuthError,
  checkCredential,
  claimedOwner,
  readInvite,
  readRevocations
} from '@frankenstein-mesh/mesh'
import type { RefusalReason } from '@frankenstein-mesh/protocol'
import type { Logger } from 'pino'
import { z } from 'zod'
import type { PoolWeight } from './config.ts'
import { AgentError } from './errors.ts'

/** A pool this agent serves, and whose word it takes for it. */
export interface Membership {
  readonly name: string
  readonly weight: number
  /** The owner's key (peer id): from the invite, or pinned on first use. */
  owner: string | undefined
  readonly invite: string | undefined
  readonly trustOnFirstUse: boolean
  /** Peers the invite says the pool can be met through. */
  readonly bootstrap: readonly string[]
}

const InviteStore = z.record(z.string(), z.string().max(20_000))

/** `invites.json` beside the identity: pools joined by invite are then joined again by name. */
export function invitesFile(identity: string): string {
  return join(dirname(identity), 'invites.json')
}

/**
 * Turns `--pool` values into memberships: invites are verified and remembered by pool name; a
 * name alone needs a remembered invite, or `--trust-on-first-use` (never the default).
 */
export async function resolveMemberships(
  pools: readonly PoolWeight[],
  file: string,
  trustOnFirstUse: boolean
): Promise<Membership[]> {
  const stored = await loadInvites(file)
  const memberships: Membership[] = []
  for (const pool of pools) {
    const text = pool.invite ?? (pool.name === undefined ? undefined : stored[pool.name])
    if (text !== undefined) {
      const invite = await readInvite(text).catch((err: unknown) => {
        throw new AgentError('ERR_BAD_INVITE', `pool ${pool.name ?? 'invite'}: ${(err as Error).message}`, {
          cause: err
        })
      })
      stored[invite.pool] = text
      memberships.push({
        name: invite.pool,
        weight: pool.weight,
        owner: invite.owner,
        invite: text,
        trustOnFirstUse: false,
        bootstrap: invite.bootstrap
      })
    } else if (trustOnFirstUse && pool.name !== undefined) {
      memberships.push({
        name: pool.name,
        weight: pool.weight,
        owner: undefined,
        invite: undefined,
        trustOnFirstUse: true,
        bootstrap: []
      })
    } else {
      throw new AgentError(
        'ERR_NO_INVITE',
        `pool ${pool.name ?? '?'}: no invite known; pass the pool's invite (fm-invite:...), or --trust-on-first-use on a LAN you trust`
      )
    }
  }
  if (new Set(memberships.map((m) => m.name)).size !== memberships.length)
    throw new AgentError('ERR_USAGE', 'each pool may be joined once')
  await saveInvites(file, stored)
  return memberships
}

async function loadInvites(file: string): Promise<Record<string, string>> {
  const text = await readFile(file, 'utf8').catch(() => '{}')
  const parsed = InviteStore.safeParse(JSON.parse(text))
  return parsed.success ? parsed.data : {}
}

async function saveInvites(file: string, invites: Record<string, string>): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  const tmp = `${file}.tmp-${process.pid}`
  await writeFile(tmp, `${JSON.stringify(invites, null, 2)}\n`, { mode: 0o600 })
  await rename(tmp, file)
}

export type Verdict =
  | { readonly ok: true; readonly serial: number }
  | { readonly ok: false; readonly reason: RefusalReason; readonly message: string }

/** Decides, per pool, whose lease requests to take: the owner's credentials, minus its revocations. */
export class PoolAuthority {
  private readonly byName: Map<string, Membership>
  private readonly revoked = new Map<string, { issued: number; serials: Set<number> }>()
  private readonly log: Logger

  constructor(memberships: readonly Membership[], logger: Logger) {
    this.byName = new Map(memberships.map((m) => [m.name, m]))
    this.log = logger.child({ component: 'pool-authority' })
  }

  membership(pool: string): Membership | undefined {
    return this.byName.get(pool)
  }

  async authorize(pool: string, credential: string | undefined, peer: string): Promise<Verdict> {
    const membership = this.byName.get(pool)
    if (membership === undefined)
      return { ok: false, reason: 'unknown-pool', message: `this worker does not serve pool ${pool}` }
    try {
      const owner = membership.owner ?? firstUseOwner(membership, credential)
      const revoked = this.revoked.get(pool)?.serials ?? new Set<number>()
      const checked = await checkCredential(credential, { pool, owner, subject: peer, revoked })
      if (membership.owner === undefined) {
        membership.owner = owner
        this.log.warn({ pool, owner }, 'owner key pinned on first use')
      }
      return { ok: true, serial: checked.serial }
    } catch (err) {
      if (err instanceof PoolAuthError) return { ok: false, reason: err.reason, message: err.message }
      throw err
    }
  }

  /** Takes a newer owner-signed revocation list; returns the pool and serials now revoked. */
  async applyRevocations(text: string): Promise<{ pool: string; serials: ReadonlySet<number> } | undefined> {
    const list = await readRevocations(text)
    const membership = this.byName.get(list.pool)
    if (membership?.owner !== list.owner) return undefined
    const known = this.revoked.get(list.pool)
    if (known !== undefined && known.issued >= list.issued) return undefined
    const serials = new Set(list.serials)
    this.revoked.set(list.pool, { issued: list.issued, serials })
    this.log.info({ pool: list.pool, serials: list.serials }, 'revocations')
    return { pool: list.pool, serials }
  }

  isRevoked(pool: string, serial: number): boolean {
    return this.revoked.get(pool)?.serials.has(serial) === true
  }
}

/** Trust on first use: the owner a credential claims, pinned only once its signature checks out. */
function firstUseOwner(membership: Membership, credential: string | undefined): string {
  if (!membership.trustOnFirstUse || credential === undefined)
    throw new PoolAuthError('no-credential', `pool ${membership.name} needs a credential`)
  const owner = claimedOwner(credential)
  if (owner === undefined) throw new PoolAuthError('bad-credential', 'unreadable credential')
  return owner
}
