import type { IncomingMessage } from 'node:http'
import { CreditsError, createSpend, readApiKey, spendFor, type Ledger } from '@frankenstein-mesh/credits'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'
import { OrchError } from './errors.ts'

export interface SpendingInit {
  readonly pool: string
  /** Signs the charges (ours is the orchestrator's identity). */
  readonly key: PrivateKey
  readonly ledger: Ledger
  /** Requests without an API key: served after credit holders, or refused. */
  readonly anonymous: boolean
  /** Generations at once (llama-server's parallel slots); the rest wait here, by priority. */
  readonly slots: number
  readonly logger: Logger
}

export type Caller = { readonly identity: string } | { readonly identity: undefined }

interface Waiter {
  readonly identity: string | undefined
  readonly grant: () => void
}

/**
 * Spending credit on the pool's API. Callers show an API key (`Authorization: Bearer fmk_...`, made
 * by `mesh-agent credits key`) or none. Generations take one of `slots`; when they are all busy,
 * callers wait here, and each freed slot goes to a caller with credit in this pool, drawn in
 * proportion to balance (lottery scheduling), before anyone without. Each request is then charged
 * by the tokens it processed, as a signed entry in the ledger.
 */
export class Spending {
  private readonly init: SpendingInit
  private readonly log: Logger
  private readonly waiters: Waiter[] = []
  private readonly keys = new Map<string, { identity: string; expires: number }>()
  private free: number
  /** Credit charged since start. */
  spent = 0

  constructor(init: SpendingInit) {
    this.init = init
    this.free = init.slots
    this.log = init.logger.child({ component: 'spending' })
  }

  /** Who is calling: an identity from a valid key, or nobody; throws ERR_UNAUTHORIZED otherwise. */
  async identify(req: IncomingMessage): Promise<Caller> {
    const header = req.headers.authorization
    const token = header?.startsWith('Bearer ') === true ? header.slice(7).trim() : undefined
    if (token === undefined || !token.startsWith('fmk_')) {
      if (this.init.anonymous) return { identity: undefined }
      throw new OrchError(
        'ERR_UNAUTHORIZED',
        'this pool serves API keys only: make one with `mesh-agent credits key`'
      )
    }
    const cached = this.keys.get(token)
    if (cached !== undefined && cached.expires > Date.now()) return { identity: cached.identity }
    try {
      const key = await readApiKey(token)
      if (key.pool !== this.init.pool)
        throw new OrchError('ERR_UNAUTHORIZED', `the API key is for pool ${key.pool}`)
      if (this.keys.size >= 10_000) this.keys.clear()
      this.keys.set(token, { identity: key.identity, expires: key.expires })
      return { identity: key.identity }
    } catch (err) {
      if (err instanceof CreditsError) throw new OrchError('ERR_UNAUTHORIZED', err.message)
      throw err
    }
  }

  /** Waits for a generation slot (bounded); resolves with its release. */
  async acquire(caller: Caller, timeoutMs: number, signal: AbortSignal): Promise<() => void> {
    let released = false
    const release = () => {
      if (released) return
      released = true
      this.free++
      this.dispatch()
    }
    if (this.free > 0 && this.waiters.length === 0) {
      this.free--
      return release
    }
    const { promise, resolve, reject } = Promise.withResolvers<undefined>()
    const waiter: Waiter = { identity: caller.identity, grant: () => resolve(undefined) }
    this.waiters.push(waiter)
    const abandon = (why: string) => () => {
      const at = this.waiters.indexOf(waiter)
      if (at === -1) return
      this.waiters.splice(at, 1)
      reject(new OrchError('ERR_UNAVAILABLE', why))
    }
    const timer = setTimeout(abandon('no generation slot came free in time'), timeoutMs)
    const onAbort = abandon('the client went away')
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      await promise
    } finally {
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
    }
    return release
  }

  /** Charges an identified caller for the tokens its request processed. */
  async charge(caller: Caller, tokens: number): Promise<void> {
    if (caller.identity === undefined || tokens <= 0) return
    const spend = await createSpend(this.init.key, {
      pool: this.init.pool,
      identity: caller.identity,
      tokens
    })
    await this.init.ledger.appendSpend(spend)
    this.spent += spendFor(tokens)
    this.log.info({ identity: caller.identity, tokens }, 'charged')
  }

  get queued(): number {
    return this.waiters.length
  }

  private dispatch(): void {
    while (this.free > 0 && this.waiters.length > 0) {
      const next = this.pick()
      this.waiters.splice(this.waiters.indexOf(next), 1)
      this.free--
      next.grant()
    }
  }

  /** Credit holders first, drawn in proportion to balance; then everyone else, in arrival order. */
  private pick(): Waiter {
    const weighted = this.waiters
      .map((w) => ({
        w,
        balance: w.identity === undefined ? 0 : this.init.ledger.balanceOf(w.identity, this.init.pool)
      }))
      .filter((x) => x.balance > 0)
    const total = weighted.reduce((sum, x) => sum + x.balance, 0)
    let draw = Math.random() * total
    for (const x of weighted) {
      draw -= x.balance
      if (draw <= 0) return x.w
    }
    return weighted.at(-1)?.w ?? (this.waiters[0] as Waiter)
  }
}
