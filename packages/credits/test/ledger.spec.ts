import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { DatabaseSync } from 'node:sqlite'
import { after, before, describe, it } from 'node:test'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  CreditsError,
  Ledger,
  createApiKey,
  createSpend,
  creditFor,
  disputeOf,
  readApiKey,
  readReceipt,
  signReceipt,
  spendFor
} from '../src/index.ts'
import { figures, parties, signedReceipt, type Parties } from './fixtures/receipts.ts'

let dir: string
let p: Parties
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-ledger-'))
  p = await parties()
})
after(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('the credit formula', () => {
  it('gives one credit for a GiB-hour, a compute minute or ten GiB loaded', () => {
    const zero = { memoryGiBs: 0, computeMs: 0, loadedBytes: 0, computes: 0 }
    assert.equal(creditFor({ ...zero, memoryGiBs: 3600 }), 1)
    assert.equal(creditFor({ ...zero, computeMs: 60_000, computes: 500 }), 1)
    assert.equal(creditFor({ ...zero, loadedBytes: 10 * 2 ** 30 }), 1)
    assert.ok(Math.abs(creditFor(figures(2)) - 2 * creditFor(figures(1))) <= 2e-6)
  })

  it('countersigns claims within tolerance and disputes the rest, saying which figure', () => {
    const measured = figures(10)
    assert.equal(disputeOf(measured, measured), undefined)
    assert.equal(disputeOf({ ...measured, computeMs: measured.computeMs * 0.9 }, measured), undefined)
    assert.match(disputeOf({ ...measured, computeMs: measured.computeMs * 2 }, measured) ?? '', /^compute/)
    assert.match(disputeOf({ ...measured, memoryGiBs: measured.memoryGiBs * 2 }, measured) ?? '', /^memory/)
    assert.match(disputeOf({ ...measured, loadedBytes: 2 ** 40 }, measured) ?? '', /^loaded/)
  })
})

describe('receipts', () => {
  it('refuses a receipt whose credit is not the formula’s, or that is too large, before anything else', async () => {
    const { text } = await signedReceipt(p, 0)
    const inflated = text.replace(/"credit":[0-9.e-]+/, '"credit":999')
    assert.throws(() => readReceipt(inflated), { code: 'ERR_BAD_RECEIPT', message: /formula/ })
    assert.throws(() => readReceipt(' '.repeat(5000)), { code: 'ERR_BAD_RECEIPT', message: /bytes/ })
    assert.throws(() => readReceipt('{'), { code: 'ERR_BAD_RECEIPT' })
  })
})

describe('the ledger', () => {
  it('records doubly-signed receipts once, chains them, verifies, and sums balances', async () => {
    const ledger = Ledger.open(join(dir, 'a.sqlite'))
    try {
      for (let seq = 0; seq < 3; seq++) await ledger.append(await signedReceipt(p, seq))
      const again = await ledger.append(await signedReceipt(p, 1))
      assert.equal(again.duplicate, true)
      assert.deepEqual(await ledger.verify(), { ok: true, entries: 3 })
      const [balance] = ledger.balances()
      assert.ok(balance !== undefined)
      assert.equal(balance.receipts, 3)
      assert.ok(Math.abs(balance.credit - 3 * creditFor(figures(1))) < 1e-9)
    } finally {
      ledger.close()
    }
  })

  it('refuses a receipt with a bad signature and leaves the ledger as it was', async () => {
    const ledger = Ledger.open(join(dir, 'b.sqlite'))
    try {
      await ledger.append(await signedReceipt(p, 0))
      const good = await signedReceipt(p, 1)
      const forged = { ...good, orchestratorSignature: await signReceipt(p.worker, good.text) }
      await assert.rejects(
        ledger.append(forged),
        (err: unknown) => err instanceof CreditsError && /orchestrator/.test(err.message)
      )
      assert.deepEqual(await ledger.verify(), { ok: true, entries: 1 })
    } finally {
      ledger.close()
    }
  })

  it('is append-only through SQL, and names the first tampered entry when the file is edited', async () => {
    const path = join(dir, 'c.sqlite')
    const ledger = Ledger.open(path)
    for (let seq = 0; seq < 4; seq++) await ledger.append(await signedReceipt(p, seq))
    ledger.close()

    const raw = new DatabaseSync(path)
    assert.throws(() => raw.exec('UPDATE entries SET credit = 100 WHERE seq = 2'), /append-only/)
    assert.throws(() => raw.exec('DELETE FROM entries WHERE seq = 2'), /append-only/)
    // Someone with the file and sqlite3 drops the guards and edits entry 3.
    raw.exec('DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete;')
    raw.exec(`UPDATE entries SET body = replace(body, '"seq":2', '"seq":7') WHERE seq = 3`)
    raw.close()
    const reopened = Ledger.open(path)
    try {
      const result = await reopened.verify()
      if (result.ok) assert.fail('the edited ledger verified')
      assert.equal(result.bad.seq, 3)
      assert.equal(result.entries, 2)
    } finally {
      reopened.close()
    }

    const raw2 = new DatabaseSync(path)
    // (Opening the ledger put the guards back.)
    raw2.exec('DROP TRIGGER entries_no_delete; DELETE FROM entries WHERE seq = 3')
    raw2.close()
    const again = Ledger.open(path)
    try {
      const result = await again.verify()
      assert.deepEqual(result.ok ? undefined : result.bad, { seq: 4, reason: 'entry 3 is missing' })
    } finally {
      again.close()
    }
  })

  it('keeps every acknowledged receipt, and no half one, when its writer is killed -9', async () => {
    const path = join(dir, 'd.sqlite')
    const child = spawn(
      process.execPath,
      [join(import.meta.dirname, 'fixtures', 'append-until-killed.ts'), path],
      {
        stdio: ['ignore', 'pipe', 'inherit']
      }
    )
    const exited = new Promise((resolve) => child.once('exit', resolve))
    let acknowledged = 0
    for await (const line of createInterface({ input: child.stdout })) {
      acknowledged = Number(line)
      if (acknowledged >= 40) child.kill('SIGKILL')
    }
    await exited
    const ledger = Ledger.open(path)
    try {
      const result = await ledger.verify()
      assert.equal(result.ok, true, JSON.stringify(result))
      assert.ok(result.entries >= acknowledged, `${result.entries} entries, ${acknowledged} acknowledged`)
    } finally {
      ledger.close()
    }
  })
})

describe('spending', () => {
  it('makes API keys that speak for their identity until they expire, and refuses altered ones', async () => {
    const key = await createApiKey(p.worker, { pool: 'alpha', expires: Date.now() + 60_000 })
    const read = await readApiKey(key)
    assert.equal(read.identity, peerIdFromPrivateKey(p.worker).toString())
    assert.equal(read.pool, 'alpha')
    await assert.rejects(readApiKey(key, Date.now() + 120_000), {
      code: 'ERR_BAD_API_KEY',
      message: /expired/
    })
    const body = JSON.parse(Buffer.from(key.slice(4), 'base64url').toString()) as { p: string; s: string }
    const altered = `fmk_${Buffer.from(JSON.stringify({ ...body, p: body.p.replace('alpha', 'gamma') })).toString('base64url')}`
    await assert.rejects(readApiKey(altered), { code: 'ERR_BAD_API_KEY', message: /signature/ })
    await assert.rejects(readApiKey('sk-123'), { code: 'ERR_BAD_API_KEY' })
  })

  it('charges spends against the balance, in the chain, and refuses a forged one', async () => {
    const ledger = Ledger.open(join(dir, 'e.sqlite'))
    try {
      const worker = peerIdFromPrivateKey(p.worker).toString()
      await ledger.append(await signedReceipt(p, 0))
      const earned = ledger.balanceOf(worker, 'alpha')
      await ledger.appendSpend(
        await createSpend(p.orchestrator, { pool: 'alpha', identity: worker, tokens: 2_000 })
      )
      assert.ok(Math.abs(ledger.balanceOf(worker, 'alpha') - (earned - spendFor(2_000))) < 1e-9)
      const forged = await createSpend(p.worker, { pool: 'alpha', identity: worker, tokens: 1 })
      await assert.rejects(
        ledger.appendSpend({ ...forged, signature: await signReceipt(p.orchestrator, 'something else') }),
        { code: 'ERR_BAD_RECEIPT' }
      )
      assert.deepEqual(await ledger.verify(), { ok: true, entries: 2 })
      assert.equal(ledger.balances()[0]?.receipts, 1)
      assert.deepEqual(ledger.totals('alpha'), { earned, spent: spendFor(2_000) })
      assert.deepEqual(ledger.totals('beta'), { earned: 0, spent: 0 })
    } finally {
      ledger.close()
    }
  })
})
