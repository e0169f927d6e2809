import { creditsCommand } from '@frankenstein-mesh/credits'
import { callControl, startControlServer } from '@frankenstein-mesh/control'
import { createLogger } from '@frankenstein-mesh/llama'
import {
  createCredential,
  createInvite,
  defaultIdentityPath,
  loadOrCreateIdentity
} from '@frankenstein-mesh/mesh'
import { PoolName } from '@frankenstein-mesh/protocol'
import type { PrivateKey } from '@libp2p/interface'
import { Command } from 'commander'
import { z } from 'zod'
import { ServeOptions } from './config.ts'
import { OrchError } from './errors.ts'
import { defaultPoolKeyPath } from './pool-authority.ts'
import { startServing, type OrchestratorStatus } from './serve.ts'

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

export function buildProgram(signal: AbortSignal): Command {
  const program = new Command('mesh-orch')
    .description(
      'Serve a Frankenstein Mesh pool: find its workers, lease them, split the model across them with llama.cpp RPC over encrypted libp2p tunnels, and answer the OpenAI-compatible API.'
    )
    .showHelpAfterError()

  program
    .command('serve')
    .description('serve a pool until stopped (SIGINT/SIGTERM end it, releasing every lease)')
    .option('--pool <pool>', 'the pool to serve')
    .option('--model <file.gguf>', 'the model to serve (swap it later with `mesh-orch model`)')
    .option('--host <address>', 'address of the HTTP API', '127.0.0.1')
    .option('--port <port>', 'port of the HTTP API (0: any free port)', '8080')
    .option(
      '--identity <file>',
      'Ed25519 identity key, created on first start (mode 0600)',
      defaultIdentityPath('orchestrator')
    )
    .option('--listen <multiaddr>', 'mesh address to listen on, repeatable', collect)
    .option('--announce <multiaddr>', 'mesh address to tell peers instead, repeatable', collect)
    .option(
      '--bootstrap <multiaddr>',
      'peer to join the mesh through (/ip4/.../tcp/.../p2p/<id>), repeatable',
      collect
    )
    .option('--no-mdns', 'do not look for workers on the local network')
    .option('--llama-server-bin <path>', 'llama-server to run (default: found or built, see fm-llama ensure)')
    .option('--ctx-size <tokens>', 'context per parallel slot', '4096')
    .option('--parallel <slots>', 'parallel slots (continuous batching): many users at the cost of one', '4')
    .option(
      '--queue-timeout <seconds>',
      'how long a request waits for a serving plan before a 503 with Retry-After',
      '60'
    )
    .option(
      '--rendezvous-refresh <seconds>',
      'how often to re-announce on the DHT and look for workers',
      '60'
    )
    .option('--worker-expiry <seconds>', 'a worker not heard from for this long leaves the view', '15')
    .option(
      '--better-plan-after <seconds>',
      'switch to a plan with fewer workers only this long after the last switch',
      '300'
    )
    .option(
      '--pool-key <file>',
      'the pool owner key: we sign our own credential with it (default: <identity folder>/pools/<pool>.key; created if absent)'
    )
    .option(
      '--credential <fm-cred:...>',
      'serve a pool someone else owns, with the credential its owner gave us (`mesh-orch pool authorize`)'
    )
    .option(
      '--admission <open|invite>',
      'which workers to use: invite = only those joined with our owner invite; open = any that trusts our owner key',
      'invite'
    )
    .option('--ledger <file>', 'the credit ledger (default: <identity>.ledger.sqlite)')
    .option(
      '--anonymous <allow|refuse>',
      'requests without an API key (`mesh-agent credits key`): served after credit holders, or refused (401)',
      'allow'
    )
    .option(
      '--control <socket>',
      'local control socket for status, workers and model (default: <identity>.sock)'
    )
    .action(async (raw: Record<string, unknown>) => {
      const parsed = ServeOptions.safeParse({ ...raw, listen: raw['listen'] ?? ['/ip4/0.0.0.0/tcp/0'] })
      if (!parsed.success)
        throw new OrchError('ERR_USAGE', z.prettifyError(parsed.error).replaceAll('\n', '; '))
      const logger = createLogger({ name: 'mesh-orch' })
      const serving = await startServing(parsed.data, logger)
      const control = await startControlServer(controlPath(raw['control'], parsed.data.identity), {
        'GET /status': () => serving.status(),
        'POST /revoke': async (body) => {
          const serials = z
            .object({ serials: z.array(z.number().int().positive()).min(1) })
            .parse(body).serials
          const revoked = await serving.authority.revoke(
            serials,
            serving.orchestrator.directory.list().map((w) => w.peer)
          )
          return { revoked }
        },
        'POST /model': async (body) => {
          const path = z.object({ model: z.string().min(1) }).parse(body).model
          await serving.orchestrator.setModel(path)
          return { model: path }
        }
      })
      process.stdout.write(
        `${JSON.stringify({ event: 'listening', url: serving.url, peerId: serving.peerId, addresses: serving.addresses() })}\n`
      )
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }))
      logger.info('stopping')
      await control.close()
      await serving.stop()
    })

  const ask = (name: string, description: string) =>
    program
      .command(name)
      .description(description)
      .option('--identity <file>', 'identity of the orchestrator to ask', defaultIdentityPath('orchestrator'))
      .option('--control <socket>', 'its control socket (default: <identity>.sock)')
      .option('--json', 'print JSON')

  ask('status', 'show the running orchestrator: state, plan, workers, requests in flight').action(
    async (opts: { identity: string; control?: string; json?: boolean }) => {
      const status = (await callControl(
        controlPath(opts.control, opts.identity),
        'GET',
        '/status'
      )) as OrchestratorStatus
      process.stdout.write(`${opts.json === true ? JSON.stringify(status, null, 2) : formatStatus(status)}\n`)
    }
  )
  ask('workers', "list the pool's workers the orchestrator knows").action(
    async (opts: { identity: string; control?: string; json?: boolean }) => {
      const status = (await callControl(
        controlPath(opts.control, opts.identity),
        'GET',
        '/status'
      )) as OrchestratorStatus
      process.stdout.write(
        `${opts.json === true ? JSON.stringify(status.workers, null, 2) : formatWorkers(status)}\n`
      )
    }
  )
  program
    .command('model <file.gguf>')
    .description('serve another model without restarting: the current plan drains, then the new model loads')
    .option('--identity <file>', 'identity of the orchestrator', defaultIdentityPath('orchestrator'))
    .option('--control <socket>', 'its control socket (default: <identity>.sock)')
    .action(async (file: string, opts: { identity: string; control?: string }) => {
      await callControl(controlPath(opts.control, opts.identity), 'POST', '/model', { model: file })
      process.stdout.write(`serving ${file} from the next plan on\n`)
    })
  program.addCommand(creditsCommand(defaultIdentityPath('orchestrator')))

  const pool = program
    .command('pool')
    .description("a pool's owner: invites for workers, credentials for other orchestrators, revocations")
  const keyOptions = (command: Command) =>
    command
      .requiredOption('--pool <pool>', 'the pool')
      .option(
        '--identity <file>',
        'the owner orchestrator identity (locates the pool key)',
        defaultIdentityPath('orchestrator')
      )
      .option(
        '--pool-key <file>',
        'the pool owner key (default: <identity folder>/pools/<pool>.key; created if absent)'
      )
  keyOptions(pool.command('invite'))
    .description('print an invite for workers: `mesh-agent join --pool <invite>`')
    .option('--bootstrap <multiaddr>', 'a peer the workers can meet the pool through, repeatable', collect)
    .option('--expires <days>', 'days the invite stays valid', '30')
    .option(
      '--admission <open|invite>',
      'what the invite tells orchestrators to require of workers',
      'invite'
    )
    .action(async (opts: PoolKeyOptions & { bootstrap?: string[]; expires: string; admission: string }) => {
      const key = await poolKey(opts)
      const admission = z.enum(['open', 'invite']).parse(opts.admission)
      const expires = Date.now() + days(opts.expires)
      process.stdout.write(
        `${await createInvite(key, { pool: opts.pool, bootstrap: opts.bootstrap ?? [], expires, admission })}\n`
      )
    })
  keyOptions(pool.command('authorize'))
    .description(
      'print a credential that lets another orchestrator serve the pool: `mesh-orch serve --credential <it>`'
    )
    .requiredOption('--peer <peer-id>', 'the other orchestrator (its `mesh-orch status` shows its peer id)')
    .option('--expires <days>', 'days the credential stays valid', '30')
    .action(async (opts: PoolKeyOptions & { peer: string; expires: string }) => {
      const key = await poolKey(opts)
      const now = Date.now()
      const credential = await createCredential(key, {
        pool: opts.pool,
        subject: opts.peer,
        serial: now,
        issued: now,
        expires: now + days(opts.expires)
      })
      process.stderr.write(
        `serial ${now} (revoke it with: mesh-orch pool revoke --pool ${opts.pool} --serial ${now})\n`
      )
      process.stdout.write(`${credential}\n`)
    })
  pool
    .command('revoke')
    .description(
      'withdraw credentials: the running owner orchestrator signs the revocation and tells every worker, whose live sessions with them end'
    )
    .requiredOption('--serial <n>', 'the serial printed by `pool authorize`, repeatable', collect)
    .option('--identity <file>', 'the running owner orchestrator', defaultIdentityPath('orchestrator'))
    .option('--control <socket>', 'its control socket (default: <identity>.sock)')
    .action(async (opts: { serial: string[]; identity: string; control?: string }) => {
      const serials = opts.serial.map(Number)
      const answer = (await callControl(controlPath(opts.control, opts.identity), 'POST', '/revoke', {
        serials
      })) as { revoked: number[] }
      process.stdout.write(`revoked: ${answer.revoked.join(', ')}\n`)
    })
  return program
}

interface PoolKeyOptions {
  pool: string
  identity: string
  poolKey?: string
}

async function poolKey(opts: PoolKeyOptions): Promise<PrivateKey> {
  const name = PoolName.safeParse(opts.pool)
  if (!name.success) throw new OrchError('ERR_USAGE', `"${opts.pool}" is not a pool name`)
  return (await loadOrCreateIdentity(opts.poolKey ?? defaultPoolKeyPath(opts.identity, name.data))).privateKey
}

function days(value: string): number {
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0 || n > 3650)
    throw new OrchError('ERR_USAGE', `--expires ${value}: a number of days from 0 to 3650`)
  return n * 86_400_000
}

function controlPath(control: unknown, identity: string): string {
  return typeof control === 'string' && control !== '' ? control : `${identity}.sock`
}

function formatStatus(s: OrchestratorStatus): string {
  return [
    `pool      ${s.pool} at ${s.url}`,
    `peer      ${s.peerId}`,
    `model     ${s.model ?? 'none'}`,
    `state     ${s.state}${s.lastPlanError === null ? '' : ` (${s.lastPlanError})`}`,
    `requests  ${s.requestsInFlight} in flight`,
    `credits   ${s.credits.recorded} receipts countersigned, ${s.credits.disputes} disputed since start`,
    'plan:',
    ...(s.plan.length === 0 ? ['  none'] : s.plan.map((line) => `  ${line}`)),
    formatWorkers(s)
  ].join('\n')
}

function formatWorkers(s: OrchestratorStatus): string {
  const gib = (n: number): string => `${(n / 1024 ** 3).toFixed(1)} GiB`
  return [
    `workers (${s.workers.length}):`,
    ...s.workers.map(
      (w) =>
        `  ${w.peer}  ${gib(w.offeredBytes)} offered, ${w.lease}, rtt ${w.rttMs === null ? '?' : `${w.rttMs} ms`}`
    )
  ].join('\n')
}
