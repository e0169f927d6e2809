import { existsSync } from 'node:fs'
import { CreditsError } from './errors.ts'
import { Ledger } from './ledger.ts'
import { readReceipt } from './receipt.ts'

function openExisting(path: string): Ledger {
  if (!existsSync(path))
    throw new CreditsError('ERR_LEDGER', `no ledger at ${path} (pass --ledger or --identity)`)
  return Ledger.open(path)
}

/** `credits`: balances per worker and pool; with `json`, the doubly-signed receipts too. */
export function ledgerReport(path: string, json: boolean): string {
  const ledger = openExisting(path)
  try {
    const balances = ledger.balances()
    if (json) return JSON.stringify({ ledger: path, balances, receipts: ledger.receipts() }, null, 2)
    if (balances.length === 0) return `${path}: no receipts yet`
    const lines = balances.map(
      (b) =>
        `  ${b.pool.padEnd(16)} ${b.credit.toFixed(6).padStart(14)} credits  ${b.receipts} receipts  ${b.worker}`
    )
    const last = ledger.receipts().at(-1)
    const when =
      last === undefined ? '' : `, last receipt ${new Date(readReceipt(last.text).to).toISOString()}`
    return [`${path}${when}`, '  pool                    credit', ...lines].join('\n')
  } finally {
    ledger.close()
  }
}

/** `credits verify`: the chain, both signatures and the formula of every entry. */
export async function verifyLedgerFile(path: string): Promise<{ ok: boolean; text: string }> {
  const ledger = openExisting(path)
  try {
    const result = await ledger.verify()
    return result.ok
      ? { ok: true, text: `${path}: ${result.entries} entries, chain and signatures verified` }
      : {
          ok: false,
          text: `${path}: entry ${result.bad.seq} is bad: ${result.bad.reason} (${result.entries} entries before it verified)`
        }
  } finally {
    ledger.close()
  }
}
