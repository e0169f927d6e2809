import { readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import {
  PoolAuthError,
  checkCredential,
  claimedOwner,
  createCredential,
  createRevocations,
  loadOrCreateIdentity,
  readInvite,
  request,
  type MeshNode
} from '@frankenstein-mesh/mesh'
import {
  MAX_POOL_UPDATE_BYTES,
  PROTOCOL,
  PoolUpdateAck,
  type WorkerAdvert
} from '@frankenstein-mesh/protocol'
import type { Logger } from 'pino'
import { OrchError } from './errors.ts'

/** `<identity folder>/pools/<pool>.key`: the pool's owner key, created with the pool. */
export function defaultPoolKeyPath(identity: string, pool: string): string {
  return join(dirname(identity), 'pools', `${pool}.key`)
}

export interface AuthorityInit {
  readonly pool: string
  readonly node: MeshNode
  readonly logger: Logger
  /** The owner key: this orchestrator owns the pool (and creates it on first start). */
  readonly poolKeyPath?: string | undefined
  /** Or another owner's credential for this orchestrator. */
  readonly credential?: string | undefined
  /** `open`: use any worker of the pool's owner; `invite`: only workers that joined with its invite. */
  readonly admission: 'open' | 'invite'
}

const CREDENTIAL_LIFETIME_MS = 24 * 3_600_000

/**
 * The orchestrator's side of pool authority: the credential it shows agents (self-issued with the
 * owner key, or given by the owner), which workers it admits, and, for the owner, revocations.
 */
export class OrchestratorAuthority {
  readonly owner: string
  private readonly init: AuthorityInit
  private readonly key: PrivateKey | undefined
  private issued: { text: string; expires: number } | undefined
  private revocations: { text: string; serials: number[] } | undefined
  private readonly log: Logger

  private constructor(
    init: AuthorityInit,
    owner: string,
    key: PrivateKey | undefined,
    given: { text: string; expires: number } | undefined
  ) {
    this.init = init
    this.owner = owner
    this.key = key
    this.issued = given
    this.log = init.logger.child({ component: 'pool-authority', pool: init.pool })
  }

  static async create(init: AuthorityInit): Promise<OrchestratorAuthority> {
    if (init.credential !== undefined) {
      const self = init.node.peerId.toString()
      const claimed = claimedOwner(init.credential)
      if (claimed === undefined)
        throw new OrchError('ERR_BAD_CREDENTIAL', '--credential is not an fm-cred string')
      const checked = await checkCredential(init.credential, {
        pool: init.pool,
        owner: claimed,
        subject: self,
        revoked: new Set()
      }).catch((err: unknown) => {
        throw new OrchError('ERR_BAD_CREDENTIAL', `--credential: ${(err as Error).message}`, { cause: err })
      })
      return new OrchestratorAuthority(init, checked.owner, undefined, {
        text: init.credential,
        expires: checked.expires
      })
    }
    if (init.poolKeyPath === undefined)
      throw new OrchError('ERR_USAGE', 'give the pool key (--pool-key) or a credential (--credential)')
    const key = await loadOrCreateIdentity(init.poolKeyPath)
    if (key.created)
      init.logger.info({ pool: init.pool, owner: key.peerId, path: key.path }, 'pool created: its owner key')
    const authority = new OrchestratorAuthority(init, key.peerId, key.privateKey, undefined)
    await authority.loadRevocations()
    return authority
  }

  get isOwner(): boolean {
    return this.key !== undefined
  }

  /** The credential to show agents; the owner re-issues its own before it expires. */
  async credential(): Promise<string> {
    const now = Date.now()
    if (this.issued !== undefined && this.issued.expires - now > CREDENTIAL_LIFETIME_MS / 2)
      return this.issued.text
    if (this.key === undefined) {
      if (this.issued !== undefined && this.issued.expires > now) return this.issued.text
      throw new OrchError(
        'ERR_CREDENTIAL_EXPIRED',
        'our credential for the pool expired: ask the owner for a new one'
      )
    }
    const expires = now + CREDENTIAL_LIFETIME_MS
    const text = await createCredential(this.key, {
      pool: this.init.pool,
      subject: this.init.node.peerId.toString(),
      serial: now,
      issued: now,
      expires
    })
    this.issued = { text, expires }
    return text
  }

  /** A worker is used only if it takes our owner's word for the pool (and, unless open, holds its invite). */
  async admit(_peer: PeerId, advert: WorkerAdvert): Promise<boolean> {
    const { owner, invite } = advert.membership
    if (owner !== undefined && owner !== this.owner) return false
    if (this.init.admission === 'open') return true
    if (invite === undefined) return false
    try {
      const read = await readInvite(invite)
      return read.owner === this.owner && read.pool === this.init.pool
    } catch (err) {
      if (err instanceof PoolAuthError) return false
      throw err
    }
  }

  /** Owner only: withdraw credentials by serial; every known worker hears of it now. */
  async revoke(serials: readonly number[], workers: readonly PeerId[]): Promise<number[]> {
    if (this.key === undefined)
      throw new OrchError('ERR_NOT_OWNER', 'only the pool owner can revoke credentials')
    const all = [...new Set([...(this.revocations?.serials ?? []), ...serials])]
    const text = await createRevocations(this.key, { pool: this.init.pool, serials: all, issued: Date.now() })
    this.revocations = { text, serials: all }
    await writeFile(`${this.init.poolKeyPath ?? ''}.revoked`, `${JSON.stringify(this.revocations)}\n`, {
      mode: 0o600
    })
    await Promise.all(workers.map((peer) => this.pushTo(peer)))
    return all
  }

  /** Tells a worker the owner's newest revocations (each worker on joining, and on each revocation). */
  async pushTo(peer: PeerId): Promise<void> {
    if (this.revocations === undefined) return
    await request(
      this.init.node,
      peer,
      PROTOCOL.poolUpdate,
      { type: 'pool-update', version: 1, revocations: this.revocations.text },
      PoolUpdateAck,
      {
        maxBytes: MAX_POOL_UPDATE_BYTES,
        timeoutMs: 5_000
      }
    ).catch((err: unknown) =>
      this.log.debug(
        { peer: peer.toString(), err: (err as Error).message },
        'cannot tell a worker of revocations'
      )
    )
  }

  private async loadRevocations(): Promise<void> {
    const text = await readFile(`${this.init.poolKeyPath ?? ''}.revoked`, 'utf8').catch(() => undefined)
    if (text !== undefined) this.revocations = JSON.parse(text) as { text: string; serials: number[] }
  }
}
