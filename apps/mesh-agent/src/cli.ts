import { existsSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { createApiKey, creditsCommand } from '@frankenstein-mesh/credits'
import { Command, Option } from 'commander'
import { createLogger } from '@frankenstein-mesh/llama'
import { defaultIdentityPath, loadOrCreateIdentity } from '@frankenstein-mesh/mesh'
import { PoolName } from '@frankenstein-mesh/protocol'
import { z } from 'zod'
import { startAgent } from './agent.ts'
import { formatStatus, type AgentStatus } from './agent-status.ts'
import { TextResponse, callControl, startControlServer } from '@frankenstein-mesh/control'
import { JoinOptions } from './config.ts'
import { AgentError } from './errors.ts'
import { invitesFile, resolveMemberships } from './memberships.ts'
import { agentMetrics } from './metrics.ts'
import { runSteps, serviceFile } from './service.ts'

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

export function buildProgram(signal: AbortSignal): Command {
  const program = new Command('mesh-agent')
    .description(
      "Lend this machine to Frankenstein Mesh pools: runs one llama.cpp rpc-server and carries pools' RPC to it over encrypted libp2p streams."
    )
    .showHelpAfterError()

  program
    .command('join')
    .description('join one or more pools and serve them until stopped (SIGINT/SIGTERM end it cleanly)')
    .option(
      '--pool <invite|name[=weight]>',
      'a pool to serve: its invite (fm-invite:..., remembered by name) or a name joined before; repeatable; the weight sets its share of this machine (default 1)',
      collect
    )
    .option(
      '--identity <file>',
      'Ed25519 identity key, created on first start (mode 0600)',
      defaultIdentityPath('agent')
    )
    .option('--listen <multiaddr>', 'address to listen on, repeatable', collect)
    .option(
      '--announce <multiaddr>',
      'address to tell peers instead (port forward, relay in front), repeatable',
      collect
    )
    .option(
      '--bootstrap <multiaddr>',
      'peer to join the mesh through (/ip4/.../tcp/.../p2p/<id>), repeatable',
      collect
    )
    .option('--no-mdns', 'do not look for pools on the local network')
    .option(
      '--memory <size>',
      'memory lent to pools, e.g. 8GiB (default: 80% of what rpc-server reports free)'
    )
    .option('--threads <n>', 'CPU threads for rpc-server')
    .addOption(
      new Option(
        '--rpc-server-bin <path>',
        'ggml-rpc-server to run (default: found or built, see fm-llama ensure)'
      ).conflicts('rpcPort')
    )
    .option(
      '--rpc-port <port>',
      'use an rpc-server already listening on 127.0.0.1:<port> instead of starting one'
    )
    .option('--relay-server', 'relay connections for peers that cannot reach each other directly')
    .option(
      '--trust-on-first-use',
      'for pools joined by name without an invite: accept the first owner key an orchestrator shows (LAN demos only)'
    )
    .option('--relay-listen', 'also be reachable through a relay (for a machine behind NAT or a firewall)')
    .option(
      '--rendezvous-refresh <seconds>',
      'how often to re-announce on the DHT and look for orchestrators',
      '60'
    )
    .option(
      '--min-slice <seconds>',
      'a pool keeps this worker at least this long once granted (each switch reloads a model)',
      '300'
    )
    .option(
      '--grace <seconds>',
      'notice a lease holder gets to drain before its RPC streams are closed',
      '30'
    )
    .option('--lease-ttl <seconds>', 'a holder that does not renew for this long loses its lease', '60')
    .option(
      '--idle <seconds>',
      'a holder that sent no RPC for this long yields at once to a waiting pool',
      '60'
    )
    .option(
      '--receipt-interval <seconds>',
      'propose a signed receipt for the lease held this often (and at its end), for credit',
      '300'
    )
    .addOption(
      new Option(
        '--sharing <mode>',
        'how the pools share rpc-server: "exclusive" grants one pool at a time a lease (time slices; each switch reloads a model); "concurrent" grants every pool a lease at once and multiplexes their RPC sessions onto rpc-server, no reloads, each pool limited to its weight\'s share of --memory; "auto" is concurrent while the models of the pools that ask (as their orchestrators say) fit in --memory together, and falls back to exclusive time slices when they do not'
      )
        .choices(['exclusive', 'concurrent', 'auto'])
        .default('exclusive')
    )
    .option('--ledger <file>', 'the credit ledger (default: <identity>.ledger.sqlite)')
    .option('--control <socket>', 'local control socket for `status` and `leave` (default: <identity>.sock)')
    .action(async (raw: Record<string, unknown>) => {
      const parsed = JoinOptions.safeParse({ ...raw, listen: raw['listen'] ?? ['/ip4/0.0.0.0/tcp/0'] })
      if (!parsed.success)
        throw new AgentError('ERR_USAGE', z.prettifyError(parsed.error).replaceAll('\n', '; '))
      const logger = createLogger({ name: 'mesh-agent' })
      const agent = await startAgent(parsed.data, logger)
      const ready = {
        event: 'ready',
        peerId: agent.peerId,
        addresses: agent.addresses(),
        pools: agent.status().pools.map((p) => p.name),
        rpcPort: agent.rpcPort
      }
      const metrics = agentMetrics(() => agent.status())
      const leave = new AbortController()
      const control = await startControlServer(controlPath(raw['control'], parsed.data.identity), {
        'GET /status': () => agent.status(),
        'GET /metrics': async () => new TextResponse(await metrics.scrape(), metrics.contentType),
        'POST /leave': () => {
          leave.abort()
          return { leaving: true }
        }
      })
      process.stdout.write(`${JSON.stringify(ready)}\n`)
      await new Promise<void>((resolve) => {
        for (const s of [signal, leave.signal]) s.addEventListener('abort', () => resolve(), { once: true })
      })
      logger.info('leaving')
      await agent.stop()
      await control.close()
    })

  program
    .command('status')
    .description(
      'show the running agent: identity, addresses, pools, the current lease and queue, rpc-server health, traffic per pool'
    )
    .option('--identity <file>', 'identity of the agent to ask', defaultIdentityPath('agent'))
    .option('--control <socket>', 'its control socket (default: <identity>.sock)')
    .option('--json', 'print the status as JSON')
    .action(async (opts: { identity: string; control?: string; json?: boolean }) => {
      const status = (await callControl(
        controlPath(opts.control, opts.identity),
        'GET',
        '/status'
      )) as AgentStatus
      process.stdout.write(`${opts.json === true ? JSON.stringify(status, null, 2) : formatStatus(status)}\n`)
    })

  const credits = creditsCommand(defaultIdentityPath('agent'))
  program.addCommand(credits)
  credits
    .command('key')
    .description(
      "print an API key for this worker's identity in a pool: requests with it spend your credit there and go first when the pool is busy"
    )
    .requiredOption('--pool <pool>', 'the pool the key is for')
    .option('--days <n>', 'days the key stays valid', '90')
    .action(async (opts: { pool: string; days: string }) => {
      const { identity } = credits.opts<{ identity: string }>()
      if (!existsSync(identity))
        throw new AgentError('ERR_USAGE', `no identity at ${identity}: join a pool first, or pass --identity`)
      const days = z.coerce.number().positive().max(3650).parse(opts.days)
      const key = await createApiKey((await loadOrCreateIdentity(identity)).privateKey, {
        pool: PoolName.parse(opts.pool),
        expires: Date.now() + days * 86_400_000
      })
      process.stdout.write(`${key}\n`)
    })

  program
    .command('install-service')
    .description(
      'run the agent as a service of this user, joined as the arguments after -- say (those of `join`): a systemd user unit on Linux, a launchd agent on macOS; it starts at login and restarts after a crash'
    )
    .argument('<join-arguments...>', 'the arguments of `mesh-agent join`, after --')
    .option('--no-start', 'write the service file but do not start it')
    .action(async (joinArgs: string[], opts: { start: boolean }) => {
      // The arguments are checked as join would check them, invites verified and remembered.
      const joinCommand = buildProgram(signal).commands.find((c) => c.name() === 'join')
      if (joinCommand === undefined) throw new AgentError('ERR_USAGE', 'no join command')
      const { operands, unknown } = joinCommand.parseOptions(joinArgs)
      if (operands.length > 0 || unknown.length > 0)
        throw new AgentError('ERR_USAGE', `not an argument of join: ${[...operands, ...unknown].join(' ')}`)
      const raw = joinCommand.opts<Record<string, unknown>>()
      const parsed = JoinOptions.safeParse({ ...raw, listen: raw['listen'] ?? ['/ip4/0.0.0.0/tcp/0'] })
      if (!parsed.success)
        throw new AgentError('ERR_USAGE', z.prettifyError(parsed.error).replaceAll('\n', '; '))
      const memberships = await resolveMemberships(
        parsed.data.pool,
        invitesFile(parsed.data.identity),
        parsed.data.trustOnFirstUse
      )
      const identity = await loadOrCreateIdentity(parsed.data.identity)
      const service = serviceFile([
        process.execPath,
        join(import.meta.dirname, 'bin.ts'),
        'join',
        ...joinArgs
      ])
      await mkdir(dirname(service.path), { recursive: true })
      await writeFile(service.path, service.content, { mode: 0o600 })
      const failed = opts.start ? await runSteps(service.start) : undefined
      process.stdout.write(
        [
          `service   ${service.path}${opts.start ? (failed === undefined ? ' (started)' : ' (written, not started)') : ' (written)'}`,
          `peer      ${identity.peerId}`,
          `pools     ${memberships.map((m) => m.name).join(', ')}`,
          `logs      ${service.logs}`,
          ...(failed === undefined ? [] : [`could not start it: ${failed}`])
        ].join('\n') + '\n'
      )
      if (failed !== undefined) process.exitCode = 1
    })

  program
    .command('uninstall-service')
    .description('stop and remove the service install-service wrote')
    .action(async () => {
      const service = serviceFile([])
      if (!existsSync(service.path)) {
        process.stdout.write(`no service at ${service.path}\n`)
        return
      }
      const failed = await runSteps(service.stop)
      await rm(service.path, { force: true })
      process.stdout.write(
        `removed ${service.path}${failed === undefined ? '' : ` (stopping it failed: ${failed})`}\n`
      )
    })

  program
    .command('metrics')
    .description("print the running agent's Prometheus metrics (served on its control socket at /metrics)")
    .option('--identity <file>', 'identity of the agent to ask', defaultIdentityPath('agent'))
    .option('--control <socket>', 'its control socket (default: <identity>.sock)')
    .action(async (opts: { identity: string; control?: string }) => {
      process.stdout.write(
        String(await callControl(controlPath(opts.control, opts.identity), 'GET', '/metrics'))
      )
    })

  program
    .command('leave')
    .description('make the running agent end its leases with notice, stop rpc-server and exit')
    .option('--identity <file>', 'identity of the agent', defaultIdentityPath('agent'))
    .option('--control <socket>', 'its control socket (default: <identity>.sock)')
    .action(async (opts: { identity: string; control?: string }) => {
      await callControl(controlPath(opts.control, opts.identity), 'POST', '/leave')
      process.stdout.write('leaving\n')
    })
  return program
}

function controlPath(control: unknown, identity: string): string {
  return typeof control === 'string' && control !== '' ? control : `${identity}.sock`
}
