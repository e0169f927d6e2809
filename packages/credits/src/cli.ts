import { Command } from 'commander'
import { ledgerReport, verifyLedgerFile } from './report.ts'

export interface CreditsOptions {
  readonly identity: string
  readonly ledger?: string | undefined
  readonly json?: boolean | undefined
}

/** The ledger path `credits` options name: `--ledger`, or the one beside `--identity`. */
export function ledgerPath(opts: CreditsOptions): string {
  return opts.ledger ?? `${opts.identity}.ledger.sqlite`
}

/**
 * `credits` and `credits verify`, the same for mesh-agent and mesh-orch (only the default
 * identity differs). Subcommands read the parent's options: `credits verify --ledger x`.
 */
export function creditsCommand(defaultIdentity: string): Command {
  const credits = new Command('credits')
    .description('credit in the ledger: balances per pool (`credits verify` checks every entry)')
    .option('--identity <file>', 'identity whose ledger to read', defaultIdentity)
    .option('--ledger <file>', 'the ledger (default: <identity>.ledger.sqlite)')
    .option('--json', 'print balances and the doubly-signed receipts as JSON')
    .action((opts: CreditsOptions) => {
      process.stdout.write(`${ledgerReport(ledgerPath(opts), opts.json === true)}\n`)
    })
  credits
    .command('verify')
    .description(
      'check the chain, both signatures and the credit of every entry; exit 1 naming the first bad one (takes the options of `credits`)'
    )
    .action(async () => {
      const result = await verifyLedgerFile(ledgerPath(credits.opts<CreditsOptions>()))
      process.stdout.write(`${result.text}\n`)
      if (!result.ok) process.exitCode = 1
    })
  return credits
}
