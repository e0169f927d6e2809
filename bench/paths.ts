/**
 * The ways llama.cpp RPC can travel between llama-server and rpc-servers, each built from real
 * processes: direct TCP, a plain two-hop TCP proxy chain (no encryption: the ceiling for any
 * tunnel on this machine), the same chain sealing each read with ChaCha20-Poly1305 and nothing
 * else (`sealed`: the floor for a Noise tunnel in Node, see tools/sealed-relay.ts), and our tunnel
 * (orchestrator process -> libp2p -> mesh-agent process).
 *
 * A topology says where the far side (rpc-servers, agents) runs and how the near side (client,
 * llama-server, orchestrator: this process) reaches it: on loopback, or across a shaped link
 * between network namespaces with a delay relay in front of every far listener.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

/** `baseline`: the tunnel of another checkout (`bench/tunnel.ts --baseline <dir>`), for before/after runs. */
export type PathName = 'direct' | 'proxy' | 'sealed' | 'tunnel' | 'baseline'

export interface RpcPath {
  readonly name: PathName
  /** `host:port` per target, in order: what llama-server's --rpc (or a client) connects to. */
  readonly endpoints: readonly string[]
  /** The path's own processes (proxies, relays, tunnel ends), whose CPU time the bench reports. */
  readonly pids: readonly number[]
  stop(): Promise<void>
}

export interface Topology {
  /** Network namespace of the far side; undefined: this one. */
  readonly farNetns?: string | undefined
  /** Makes the far side's `127.0.0.1:<port>` reachable from here; returns `host:port`. */
  expose(port: number): Promise<string>
  stop(): Promise<void>
}

const ROOT = join(import.meta.dirname, '..')
const TOOLS = join(ROOT, 'bench', 'tools')

interface Spawned {
  readonly child: ChildProcess
  readonly line: Record<string, unknown>
}

/** Spawns a node script (in a namespace when given) and waits for its first JSON or `listening <port>` line. */
export async function spawnReady(
  script: string,
  args: readonly string[],
  netns?: string,
  env: NodeJS.ProcessEnv = process.env
): Promise<Spawned> {
  const argv = [process.execPath, script, ...args]
  const [file, ...rest] = netns === undefined ? argv : ['ip', 'netns', 'exec', netns, ...argv]
  const child = spawn(file as string, rest, { stdio: ['ignore', 'pipe', 'pipe'], env })
  const stderr: string[] = []
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => stderr.push(l))
  const line = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${script} not ready:\n${stderr.slice(-5).join('\n')}`)),
      60_000
    )
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', (text) => {
      clearTimeout(timer)
      const listening = /^listening (\d+)$/.exec(text)
      resolve(
        listening === null ? (JSON.parse(text) as Record<string, unknown>) : { port: Number(listening[1]) }
      )
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${script} exited with ${code}:\n${stderr.slice(-5).join('\n')}`))
    })
  })
  return { child, line }
}

/** `ip netns exec` execs the command, so a child's pid is the process itself. */
const pidsOf = (children: readonly ChildProcess[]): number[] =>
  children.flatMap((c) => (c.pid === undefined ? [] : [c.pid]))

export async function stopAll(children: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) {
            resolve()
            return
          }
          child.once('exit', () => resolve())
          child.kill('SIGTERM')
          setTimeout(() => child.kill('SIGKILL'), 5_000).unref()
        })
    )
  )
}

export function loopback(): Topology {
  return { expose: (port) => Promise.resolve(`127.0.0.1:${port}`), stop: () => Promise.resolve() }
}

/** The far side in `netns` at `address`; every exposed port goes through a delay relay there. */
export function acrossLink(netns: string, address: string, delayMs: number): Topology {
  const relays: ChildProcess[] = []
  return {
    farNetns: netns,
    expose: async (port) => {
      const relay = await spawnReady(
        join(TOOLS, 'delay-relay-process.ts'),
        [address, String(port), String(delayMs)],
        netns
      )
      relays.push(relay.child)
      return `${address}:${String(relay.line['port'])}`
    },
    stop: () => stopAll(relays)
  }
}

/** A far-side server process (sink or rpc-server); returns its far-local port. */
export async function startFar(
  topology: Topology,
  script: string,
  args: readonly string[] = []
): Promise<{ port: number; child: ChildProcess }> {
  const { child, line } = await spawnReady(join(TOOLS, script), args, topology.farNetns)
  return { port: Number(line['port']), child }
}

export async function directPath(topology: Topology, ports: readonly number[]): Promise<RpcPath> {
  const endpoints = await Promise.all(ports.map((p) => topology.expose(p)))
  return { name: 'direct', endpoints, pids: [], stop: () => Promise.resolve() }
}

/** Two proxy processes per target: here -> proxy (near) -> link -> proxy (far) -> target. */
export function proxyPath(topology: Topology, ports: readonly number[]): Promise<RpcPath> {
  const script = join(TOOLS, 'tcp-proxy.ts')
  return relayChain('proxy', topology, ports, (far) => [script, ...far], process.env)
}

/** As proxyPath, with each hop a sealed relay (fresh keys per path): encryption and nothing else. */
export function sealedPath(topology: Topology, ports: readonly number[]): Promise<RpcPath> {
  const script = join(TOOLS, 'sealed-relay.ts')
  const env = {
    ...process.env,
    FM_SEALED_KEYS: `${randomBytes(32).toString('hex')},${randomBytes(32).toString('hex')}`
  }
  return relayChain('sealed', topology, ports, (far, near) => [script, near ? 'seal' : 'open', ...far], env)
}

async function relayChain(
  name: PathName,
  topology: Topology,
  ports: readonly number[],
  command: (target: readonly string[], near: boolean) => readonly string[],
  env: NodeJS.ProcessEnv
): Promise<RpcPath> {
  const children: ChildProcess[] = []
  const endpoints: string[] = []
  for (const port of ports) {
    const [farScript = '', ...farArgs] = command(['127.0.0.1', String(port)], false)
    const far = await spawnReady(farScript, farArgs, topology.farNetns, env)
    children.push(far.child)
    const [host = '', exposed = ''] = (await topology.expose(Number(far.line['port']))).split(':')
    const [nearScript = '', ...nearArgs] = command([host, exposed], true)
    const near = await spawnReady(nearScript, nearArgs, undefined, env)
    children.push(near.child)
    endpoints.push(`127.0.0.1:${String(near.line['port'])}`)
  }
  return { name, endpoints, pids: pidsOf(children), stop: () => stopAll(children) }
}

/**
 * One mesh-agent per target (`--rpc-port`), and one orchestrator process holding a tunnel to each.
 * `sharing` is the agents' `--sharing` (concurrent: every stream through the RPC multiplexer).
 */
export async function tunnelPath(
  topology: Topology,
  ports: readonly number[],
  sharing: 'exclusive' | 'concurrent' = 'exclusive'
): Promise<RpcPath> {
  const children: ChildProcess[] = []
  const dir = await mkdtemp(join(tmpdir(), 'fm-bench-'))
  const addresses: string[] = []
  const agentBin = join(ROOT, 'apps', 'mesh-agent', 'src', 'bin.ts')
  for (const [i, port] of ports.entries()) {
    const args = [
      'join',
      '--trust-on-first-use',
      '--pool',
      'bench',
      '--identity',
      join(dir, `agent-${i}.key`),
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--no-mdns',
      '--rpc-port',
      String(port),
      '--sharing',
      sharing
    ]
    const agent = await spawnReady(agentBin, args, topology.farNetns, {
      ...process.env,
      FM_LOG_LEVEL: 'warn'
    })
    children.push(agent.child)
    const listenAddr = (agent.line['addresses'] as string[])[0] ?? ''
    const [host = '', exposed = ''] = (
      await topology.expose(Number(/\/tcp\/(\d+)\//.exec(listenAddr)?.[1]))
    ).split(':')
    addresses.push(`/ip4/${host}/tcp/${exposed}/p2p/${String(agent.line['peerId'])}`)
  }
  const orch = await spawnReady(join(TOOLS, 'orch-tunnels.ts'), addresses)
  children.push(orch.child)
  return {
    name: 'tunnel',
    endpoints: orch.line['endpoints'] as string[],
    pids: pidsOf(children),
    stop: async () => {
      await stopAll(children)
      await rm(dir, { recursive: true, force: true })
    }
  }
}
