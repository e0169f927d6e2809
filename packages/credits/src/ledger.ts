import { createHash } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { CreditsError } from './errors.ts'
import { verifyReceipt, type SignedReceipt } from './receipt.ts'
import { verifySpend, type SignedSpend } from './spend.ts'

export interface Balance {
  readonly worker: string
  readonly pool: string
  readonly credit: number
  readonly receipts: number
}

export type VerifyResult =
  | { readonly ok: true; readonly entries: number }
  | {
      readonly ok: false
      readonly entries: number
      readonly bad: { readonly seq: number; readonly reason: string }
    }

interface Row {
  seq: number
  kind: string
  body: string
  worker_signature: string
  orchestrator_signature: string
  prev_hash: string
  hash: string
  pool: string
  worker: string
  credit: number
}

const GENESIS = '0'.repeat(64)

const SCHEMA = `
CREATE TABLE IF NOT EXISTS entries (
  seq INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  body TEXT NOT NULL,
  worker_signature TEXT NOT NULL,
  orchestrator_signature TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  body_hash TEXT NOT NULL UNIQUE,
  pool TEXT NOT NULL,
  worker TEXT NOT NULL,
  credit REAL NOT NULL,
  recorded_at INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
  BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
  BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
`

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

function entryHash(prev: string, kind: string, signed: SignedReceipt): string {
  return sha256([prev, kind, signed.text, signed.workerSignature, signed.orchestratorSignature].join('\n'))
}

/**
 * The append-only credit ledger (node:sqlite): every entry is a doubly-signed receipt, chained to
 * the one before by hash. An append is one transaction, committed with `synchronous = FULL`
 * before it returns, so what a caller acknowledged after append() survives a kill -9 or a power
 * cut, and a receipt is in the ledger whole or not at all.
 */
export class Ledger {
  private readonly db: DatabaseSync

  private constructor(db: DatabaseSync) {
    this.db = db
  }

  static open(path: string): Ledger {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    const db = new DatabaseSync(path)
    try {
      db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;')
      db.exec(SCHEMA)
    } catch (err) {
      db.close()
      throw new CreditsError('ERR_LEDGER', `cannot open the ledger at ${path}: ${(err as Error).message}`, {
        cause: err
      })
    }
    return new Ledger(db)
  }

  /** Verifies and records a receipt; recording the same receipt again changes nothing. */
  async append(signed: SignedReceipt): Promise<{ seq: number; duplicate: boolean }> {
    const receipt = await verifyReceipt(signed)
    return this.insert('receipt', signed, {
      pool: receipt.pool,
      worker: receipt.worker,
      credit: receipt.credit
    })
  }

  /** Verifies and records a charge against an identity's balance (a negative entry). */
  async appendSpend(signed: SignedSpend): Promise<{ seq: number; duplicate: boolean }> {
    const spend = await verifySpend(signed)
    const entry: SignedReceipt = {
      text: signed.text,
      workerSignature: '',
      orchestratorSignature: signed.signature
    }
    return this.insert('spend', entry, { pool: spend.pool, worker: spend.identity, credit: -spend.credit })
  }

  /** An identity's credit in a pool: earned minus spent. */
  balanceOf(identity: string, pool: string): number {
    const row = this.db
      .prepare('SELECT COALESCE(SUM(credit), 0) AS credit FROM entries WHERE worker = ? AND pool = ?')
      .get(identity, pool) as { credit: number }
    return row.credit
  }

  private insert(
    kind: 'receipt' | 'spend',
    signed: SignedReceipt,
    columns: { pool: string; worker: string; credit: number }
  ): { seq: number; duplicate: boolean } {
    const bodyHash = sha256(signed.text)
    this.db.exec('BEGIN IMMEDIATE')
    try {
      const existing = this.db.prepare('SELECT seq FROM entries WHERE body_hash = ?').get(bodyHash) as
        { seq: number } | undefined
      if (existing !== undefined) {
        this.db.exec('COMMIT')
        return { seq: existing.seq, duplicate: true }
      }
      const last = this.db.prepare('SELECT hash FROM entries ORDER BY seq DESC LIMIT 1').get() as
        { hash: string } | undefined
      const prev = last?.hash ?? GENESIS
      const result = this.db
        .prepare(
          `INSERT INTO entries (kind, body, worker_signature, orchestrator_signature, prev_hash, hash, body_hash, pool, worker, credit, recorded_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
        )
        .run(
          kind,
          signed.text,
          signed.workerSignature,
          signed.orchestratorSignature,
          prev,
          entryHash(prev, kind, signed),
          bodyHash,
          columns.pool,
          columns.worker,
          columns.credit,
          Date.now()
        )
      this.db.exec('COMMIT')
      return { seq: Number(result.lastInsertRowid), duplicate: false }
    } catch (err) {
      this.db.exec('ROLLBACK')
      throw err
    }
  }

  /** A pool's credit in this ledger: what its workers earned (receipts) and its callers spent (charges). */
  totals(pool: string): { earned: number; spent: number } {
    const row = this.db
      .prepare(
        "SELECT COALESCE(SUM(CASE WHEN kind = 'receipt' THEN credit END), 0) AS earned, COALESCE(-SUM(CASE WHEN kind = 'spend' THEN credit END), 0) AS spent FROM entries WHERE pool = ?"
      )
      .get(pool) as { earned: number; spent: number }
    return { earned: row.earned, spent: row.spent }
  }

  balances(): Balance[] {
    return this.db
      .prepare(
        "SELECT worker, pool, SUM(credit) AS credit, SUM(kind = 'receipt') AS receipts FROM entries GROUP BY worker, pool ORDER BY worker, pool"
      )
      .all() as unknown as Balance[]
  }

  /** The doubly-signed receipts, oldest first. */
  receipts(): SignedReceipt[] {
    return (
      this.db
        .prepare(
          "SELECT body, worker_signature, orchestrator_signature FROM entries WHERE kind = 'receipt' ORDER BY seq"
        )
        .all() as Array<{ body: string; worker_signature: string; orchestrator_signature: string }>
    ).map((r) => ({
      text: r.body,
      workerSignature: r.worker_signature,
      orchestratorSignature: r.orchestrator_signature
    }))
  }

  /** Checks the chain, every signature and every derived column; names the first bad entry. */
  async verify(): Promise<VerifyResult> {
    let prev = GENESIS
    let expected = 1
    let count = 0
    for (const row of this.db.prepare('SELECT * FROM entries ORDER BY seq').iterate() as Iterable<Row>) {
      const bad = (reason: string): VerifyResult => ({
        ok: false,
        entries: count,
        bad: { seq: row.seq, reason }
      })
      if (row.seq !== expected) return bad(`entry ${expected} is missing`)
      if (row.prev_hash !== prev) return bad('does not chain to the entry before it')
      const signed: SignedReceipt = {
        text: row.body,
        workerSignature: row.worker_signature,
        orchestratorSignature: row.orchestrator_signature
      }
      if (row.kind !== 'receipt' && row.kind !== 'spend') return bad(`unknown kind ${row.kind}`)
      if (entryHash(prev, row.kind, signed) !== row.hash) return bad('its hash does not match its contents')
      try {
        const columns =
          row.kind === 'receipt'
            ? await verifyReceipt(signed).then((r) => ({ pool: r.pool, worker: r.worker, credit: r.credit }))
            : await verifySpend({ text: row.body, signature: row.orchestrator_signature }).then((s) => ({
                pool: s.pool,
                worker: s.identity,
                credit: -s.credit
              }))
        if (columns.pool !== row.pool || columns.worker !== row.worker || columns.credit !== row.credit)
          return bad('its pool, worker or credit columns differ from the signed entry')
      } catch (err) {
        return bad((err as Error).message)
      }
      prev = row.hash
      expected++
      count++
    }
    return { ok: true, entries: count }
  }

  close(): void {
    this.db.close()
  }
}
