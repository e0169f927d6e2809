/**
 * The three ways llama.cpp RPC can travel between llama-server and rpc-servers, each built from
 * real processes: direct TCP, a plain two-hop TCP proxy chain (no encryption: the ceiling for any
 * tunnel on this machine), and our tunnel (orchestrator process -> libp2p -> mesh-agent process).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

export type PathName = 'direct' | 'proxy' | 'tunnel'

export interface RpcPath {
  readonly name: PathName
  /** `host:port` per target, in order: what llama-server's --rpc (or a client) connects to. */
  readonly endpoints: readonly string[]
  stop(): Promise<void>
}

/** Runs a command in a network namespace when `netns` is given. */
export interface Placement {
  readonly netns?: string | undefined
  /** Address to listen on inside that namespace (default 127.0.0.1). */
  readonly host?: string | undefined
}

const ROOT = join(import.meta.dirname, '..')

interface Spawned {
  readonly child: ChildProcess
  readonly line: Record<string, unknown>
}

/** Spawns a node script and waits for the first JSON (or `listening <port>`) line on its stdout. */
export async function spawnReady(
  script: string,
  args: readonly string[],
  placement: Placement = {},
  env: NodeJS.ProcessEnv = process.env
): Promise<Spawned> {
  const argv = [process.execPath, script, ...args]
  const [file, ...rest] =
    placement.netns === undefined ? argv : ['ip', 'netns', 'exec', placement.netns, ...argv]
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

export function directPath(targets: readonly string[]): RpcPath {
  return { name: 'direct', endpoints: targets, stop: async () => {} }
}

/** Two proxy processes per target: client -> proxy -> proxy -> target. */
export async function proxyPath(
  targets: readonly string[],
  near: Placement = {},
  far: Placement = near
): Promise<RpcPath> {
  const children: ChildProcess[] = []
  const endpoints: string[] = []
  const script = join(ROOT, 'bench', 'tools', 'tcp-proxy.ts')
  for (const target of targets) {
    const [host = '', port = ''] = target.split(':')
    const farHost = far.host ?? '127.0.0.1'
    const second = await spawnReady(script, [host, port, farHost], far)
    const first = await spawnReady(
      script,
      [farHost, String(second.line['port']), near.host ?? '127.0.0.1'],
      near
    )
    children.push(second.child, first.child)
    endpoints.push(`${near.host ?? '127.0.0.1'}:${String(first.line['port'])}`)
  }
  return { name: 'proxy', endpoints, stop: () => stopAll(children) }
}

/**
 * One mesh-agent process per target (using that rpc-server, `--rpc-port`) and one orchestrator
 * process holding a tunnel to each. `announce` lets an agent be reached through something in
 * front of it (the delay relay of the shaped-link bench).
 */
export async function tunnelPath(
  targets: readonly string[],
  near: Placement = {},
  far: Placement = near,
  announce?: (agentPort: number, index: number) => Promise<string>
): Promise<RpcPath> {
  const children: ChildProcess[] = []
  const dir = await mkdtemp(join(tmpdir(), 'fm-bench-'))
  const addresses: string[] = []
  const agentBin = join(ROOT, 'apps', 'mesh-agent', 'src', 'bin.ts')
  for (const [i, target] of targets.entries()) {
    const port = target.split(':')[1] ?? ''
    const agent = await spawnReady(
      agentBin,
      [
        'join',
        '--pool',
        'bench',
        '--identity',
        join(dir, `agent-${i}.key`),
        '--listen',
        `/ip4/${far.host ?? '127.0.0.1'}/tcp/0`,
        '--no-mdns',
        '--rpc-port',
        port
      ],
      far,
      { ...process.env, FM_LOG_LEVEL: 'warn' }
    )
    children.push(agent.child)
    const peer = String(agent.line['peerId'])
    const listenAddr = (agent.line['addresses'] as string[])[0] ?? ''
    const agentPort = Number(/\/tcp\/(\d+)\//.exec(listenAddr)?.[1])
    addresses.push(announce === undefined ? listenAddr : `${await announce(agentPort, i)}/p2p/${peer}`)
  }
  const orch = await spawnReady(join(ROOT, 'bench', 'tools', 'orch-tunnels.ts'), addresses, near, {
    ...process.env,
    FM_LISTEN: `/ip4/${near.host ?? '127.0.0.1'}/tcp/0`
  })
  children.push(orch.child)
  return {
    name: 'tunnel',
    endpoints: orch.line['endpoints'] as string[],
    stop: async () => {
      await stopAll(children)
      await rm(dir, { recursive: true, force: true })
    }
  }
}
