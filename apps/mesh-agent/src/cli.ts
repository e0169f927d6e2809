import { Command, Option } from 'commander'
import { createLogger } from '@frankenstein-mesh/llama'
import { defaultIdentityPath } from '@frankenstein-mesh/mesh'
import { z } from 'zod'
import { startAgent } from './agent.ts'
import { JoinOptions } from './config.ts'

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

/** Thrown for input a person must fix; the entry point prints it as one line and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError'
  readonly code = 'ERR_USAGE'
}

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
      '--pool <pool[=weight]>',
      'a pool to serve, repeatable; the weight sets its share of this machine (default 1)',
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
    .option('--relay-listen', 'also be reachable through a relay (for a machine behind NAT or a firewall)')
    .option(
      '--rendezvous-refresh <seconds>',
      'how often to re-announce on the DHT and look for orchestrators',
      '60'
    )
    .action(async (raw: Record<string, unknown>) => {
      const parsed = JoinOptions.safeParse({ ...raw, listen: raw['listen'] ?? ['/ip4/0.0.0.0/tcp/0'] })
      if (!parsed.success) throw new UsageError(z.prettifyError(parsed.error).replaceAll('\n', '; '))
      const logger = createLogger({ name: 'mesh-agent' })
      const agent = await startAgent(parsed.data, logger)
      const ready = {
        event: 'ready',
        peerId: agent.peerId,
        addresses: agent.addresses(),
        pools: parsed.data.pool,
        rpcPort: agent.rpcPort
      }
      process.stdout.write(`${JSON.stringify(ready)}\n`)
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }))
      logger.info('leaving')
      await agent.stop()
    })
  return program
}
