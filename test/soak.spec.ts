import assert from 'node:assert/strict'
import { execFile, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { callControl } from '@frankenstein-mesh/control'
import { TINY_MODEL, silentLogger, startLlamaServer, type LlamaBinaries } from '@frankenstein-mesh/llama'
import type { AgentStatus } from '@frankenstein-mesh/mesh-agent'
import {
  spawnAgent,
  spawnOrchestrator,
  type AgentProcess,
  type OrchestratorProcess
} from './fixtures/agent-process.ts'
import { PROMPTS, createScratch, greedyCompletion, testBinaries, type Scratch } from './fixtures/llama.ts'
import { changeAddress, createNetwork, netnsAvailable, type Host, type Network } from './fixtures/netns.ts'
import { mib, procFigures, startTime, stillRunning, type ProcFigures } from './fixtures/proc-figures.ts'
import { Traffic } from './fixtures/soak-traffic.ts'

const run = promisify(execFile)
const available = await netnsAvailable()
const skip = available.ok ? false : `the soak runs its hosts in network namespaces: ${available.reason}`
const SECONDS = soakSeconds(process.env['FM_SOAK_SECONDS'])
const AGENT_BIN = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
const ORCH_BIN = join(import.meta.dirname, '..', 'apps', 'mesh-orch', 'src', 'bin.ts')
const FORWARD = join(import.meta.dirname, 'fixtures', 'unix-forward.ts')
/** Inside the orchestrator's namespace, so no other process can hold it. */
const HTTP_PORT = 8080
const TOKENS = 16
/** How long a SIGSTOP lasts: a short laptop sleep, shorter than the lease TTL. */
const PAUSE_MS = 4_000
const LEASE_TTL_S = 8
/** A longer sleep: the holder's renewals go unanswered past the TTL. */
const LONG_SLEEP_MS = (LEASE_TTL_S + 4) * 1000
/** Bound of each wait for the pool to come back after an event. */
const RECOVERY_MS = 120_000
/** End minus start (both after warm-up, both serving with the model loaded) may not exceed these. */
const BOUND = {
  agentRssBytes: 64 * 1024 ** 2,
  rpcRssBytes: 32 * 1024 ** 2,
  fds: 8,
  sockets: 6,
  streams: 4
}

function soakSeconds(text: string | undefined): number {
  if (text === undefined || text === '') return 150
  const seconds = Number(text)
  if (!Number.isInteger(seconds) || seconds < 10 || seconds > 7 * 86_400)
    throw new Error(`FM_SOAK_SECONDS=${text}: give whole seconds from 10 to 604800`)
  return seconds
}

interface Figures {
  readonly agent: ProcFigures
  readonly rpc: ProcFigures
  readonly rpcPid: number
  readonly connections: number
  readonly streams: number
}

function describeFigures(f: Figures): string {
  return (
    `agent RSS ${mib(f.agent.rssBytes)}, ${f.agent.fds} fds (${f.agent.sockets} sockets); ` +
    `rpc-server RSS ${mib(f.rpc.rssBytes)}, ${f.rpc.fds} fds; ` +
    `mesh ${f.connections} connections, ${f.streams} streams`
  )
}

async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await sleep(250)
  }
  throw new Error(`not within ${timeoutMs} ms: ${what}`)
}

/**
 * One orchestrator host and one agent host (network namespaces on a bridge, discovery by mDNS),
 * the real CLIs, rpc-server and llama-server, and a client sending greedy completions all along,
 * while the events of a laptop's life come one after another. See docs/soak.md.
 */
describe('soak: a laptop life', { skip, timeout: SECONDS * 1000 + 20 * 60_000 }, () => {
  let bins: LlamaBinaries
  let scratch: Scratch | undefined
  let model: string
  let network: Network | undefined
  let forwarder: ChildProcess | undefined
  let agent: AgentProcess | undefined
  let orch: OrchestratorProcess | undefined
  let traffic: Traffic | undefined
  const expected = new Map<string, number[]>()
  /** Processes the test may have stopped (SIGSTOP): continued before anything else in cleanup. */
  const paused = new Set<number>()
  /** Every process of ours the test saw, by pid and start time (pids are reused on a busy host). */
  const pids = new Map<number, string | undefined>()
  const see = (pid: number): void => {
    if (!pids.has(pid)) pids.set(pid, startTime(pid))
  }
  const orchestrators: OrchestratorProcess[] = []
  /** Plans the orchestrators had to give up so far (a failover each), from their logs. */
  const replans = (): number =>
    orchestrators.reduce((n, o) => n + o.logs.filter((l) => l.includes('"plan no longer serves"')).length, 0)
  const started = Date.now()
  const note = (line: string): void => {
    process.stderr.write(`# soak ${((Date.now() - started) / 1000).toFixed(0)} s: ${line}\n`)
  }
  const continuePaused = (): void => {
    for (const pid of paused) {
      try {
        process.kill(pid, 'SIGCONT')
      } catch {
        // already gone
      }
    }
  }
  /** On an exit without cleanup: our children by their handles (rpc-server and llama-server die with them). */
  const killAll = (): void => {
    continuePaused()
    for (const child of [agent?.child, orch?.child])
      if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }

  const net = (): Network => {
    assert.ok(network !== undefined, 'the network exists')
    return network
  }
  const dir = (): string => {
    assert.ok(scratch !== undefined, 'the scratch folder exists')
    return scratch.dir
  }
  const orchHost = (): Host => net().hosts[0] as Host
  const agentHost = (): Host => net().hosts[1] as Host
  const agentKey = (): string => join(dir(), 'agent.key')
  const orchKey = (): string => join(dir(), 'orch.key')
  const socketPath = (): string => join(dir(), 'front.sock')
  const agentStatus = async (): Promise<AgentStatus> =>
    (await callControl(`${agentKey()}.sock`, 'GET', '/status', undefined, 5_000)) as AgentStatus
  const namespacePids = async (host: Host | string): Promise<number[]> => {
    const name = typeof host === 'string' ? host : host.name
    const { stdout } = await run('ip', ['netns', 'pids', name])
    return stdout.split('\n').filter(Boolean).map(Number)
  }

  const ip = async (host: Host, args: string[]): Promise<void> => {
    const result = await net().exec(host, 'ip', args)
    assert.equal(result.code, 0, `ip ${args.join(' ')}: ${result.stderr}`)
  }

  const startOrchestrator = async (): Promise<OrchestratorProcess> => {
    const spawned = await spawnOrchestrator(
      [
        '--pool',
        'soak',
        '--identity',
        orchKey(),
        '--listen',
        '/ip4/0.0.0.0/tcp/0',
        '--host',
        '127.0.0.1',
        '--port',
        String(HTTP_PORT),
        '--llama-server-bin',
        bins.llamaServer,
        '--model',
        model,
        '--ctx-size',
        '1024',
        '--parallel',
        '1',
        '--worker-expiry',
        '5',
        '--queue-timeout',
        '90'
      ],
      { command: ['ip', 'netns', 'exec', orchHost().name, process.execPath, ORCH_BIN] }
    )
    if (spawned.child.pid !== undefined) see(spawned.child.pid)
    orchestrators.push(spawned)
    return spawned
  }

  const startForwarder = async (): Promise<ChildProcess> => {
    const child = net().spawn(orchHost(), process.execPath, [FORWARD, socketPath(), String(HTTP_PORT)], {
      stdio: ['ignore', 'pipe', 'inherit']
    })
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
    const [line] = (await Promise.race([once(lines, 'line'), sleep(30_000).then(() => [undefined])])) as [
      string | undefined
    ]
    assert.ok(line?.includes('"listening"'), 'the forwarder listens')
    return child
  }

  const figures = async (): Promise<Figures> => {
    const status = await agentStatus()
    const rpcPid = status.rpcServer.pid
    assert.ok(rpcPid !== undefined && agent?.child.pid !== undefined)
    see(rpcPid)
    const agentFigures = procFigures(agent.child.pid)
    const rpcFigures = procFigures(rpcPid)
    assert.ok(agentFigures !== undefined && rpcFigures !== undefined, 'agent and rpc-server run')
    return { agent: agentFigures, rpc: rpcFigures, rpcPid, ...status.mesh }
  }

  before(async () => {
    process.once('exit', killAll)
    bins = await testBinaries()
    scratch = await createScratch('soak')
    model = await scratch.model(TINY_MODEL)
    const local = await startLlamaServer({ binary: bins.llamaServer, model, logger: silentLogger() })
    try {
      for (const prompt of PROMPTS)
        expected.set(prompt, [...(await greedyCompletion(local.url, prompt, TOKENS)).tokens])
    } finally {
      await local.stop()
    }
    network = await createNetwork({ name: 'soak', hosts: 2 })
    forwarder = await startForwarder()
    agent = await spawnAgent(
      [
        '--pool',
        'soak',
        '--identity',
        agentKey(),
        // Every address of the host, as on a laptop: a listener on one address dies with it.
        '--listen',
        '/ip4/0.0.0.0/tcp/0',
        '--rpc-server-bin',
        bins.rpcServer,
        '--lease-ttl',
        String(LEASE_TTL_S),
        '--grace',
        '3'
      ],
      {
        command: ['ip', 'netns', 'exec', agentHost().name, process.execPath, AGENT_BIN],
        // The tiny model's buffers are below glibc's dynamic mmap threshold, so once one was freed
        // they come from the heap and a free no longer shows in RSS. A fixed threshold makes them
        // behave as a real model's buffers (over 32 MiB, always mmapped) do: freed means returned.
        env: { ...process.env, MALLOC_MMAP_THRESHOLD_: String(1024 * 1024) }
      }
    )
    if (agent.child.pid !== undefined) see(agent.child.pid)
    orch = await startOrchestrator()
  })

  after(async () => {
    continuePaused()
    // A failed run leaves the client going: stop it sending (its request in flight fails with the front).
    void traffic?.stop()
    await orch?.stop()
    await agent?.stop()
    await network?.destroy()
    await scratch?.remove()
    process.off('exit', killAll)
  })

  it('keeps serving correct tokens through pauses, an address change and orchestrator restarts and kills, and leaks nothing', async (t) => {
    const client = new Traffic({
      socketPath: socketPath(),
      expected,
      tokens: TOKENS,
      requestTimeoutMs: 300_000
    })
    traffic = client
    /** At least `n` more requests completed: the pool serves again, end to end. */
    const served = async (what: string, n = 2): Promise<void> => {
      const target = client.completed + n
      const deadline = Date.now() + RECOVERY_MS
      while (client.completed < target) {
        assert.deepEqual(client.failures, [], `every request sent completes correctly (${what})`)
        assert.ok(Date.now() < deadline, `${what}: not ${n} more requests completed in ${RECOVERY_MS} ms`)
        await sleep(250)
      }
    }
    const pause = async (pid: number, ms = PAUSE_MS): Promise<void> => {
      paused.add(pid)
      process.kill(pid, 'SIGSTOP')
      try {
        await sleep(ms)
      } finally {
        process.kill(pid, 'SIGCONT')
        paused.delete(pid)
      }
    }
    const requireAgent = (): AgentProcess => {
      assert.ok(agent !== undefined && agent.child.pid !== undefined)
      return agent
    }

    const events: Record<string, () => Promise<string>> = {
      'agent SIGSTOP/SIGCONT': async () => {
        await pause(requireAgent().child.pid as number)
        await waitFor('the agent answers on its control socket', 30_000, async () => {
          await agentStatus()
          return true
        })
        return `paused ${PAUSE_MS} ms`
      },
      'agent long sleep (SIGSTOP past the lease TTL)': async () => {
        const agentPid = requireAgent().child.pid as number
        const holder = (await agentStatus()).lease.holder
        await pause(agentPid, LONG_SLEEP_MS)
        await waitFor('the agent answers on its control socket', 30_000, async () => {
          await agentStatus()
          return true
        })
        const now = (await agentStatus()).lease.holder
        return `paused ${LONG_SLEEP_MS} ms; lease ${holder?.id ?? 'none'} before, ${now?.id ?? 'none'} just after`
      },
      'rpc-server SIGSTOP/SIGCONT': async () => {
        const pid = (await agentStatus()).rpcServer.pid
        assert.ok(pid !== undefined, 'the agent runs its rpc-server')
        see(pid)
        await pause(pid)
        return `paused ${PAUSE_MS} ms (pid ${pid})`
      },
      'agent address change': async () => {
        const host = agentHost()
        const old = host.address
        const octets = old.split('.')
        const last = Number(octets[3])
        const next = [...octets.slice(0, 3), String(last >= 100 && last < 250 ? last + 1 : 100)].join('.')
        await changeAddress(host, next)
        await waitFor(`the agent lists ${next}`, 30_000, async () =>
          (await agentStatus()).addresses.some((a) => a.startsWith(`/ip4/${next}/`))
        )
        return `${old} -> ${next}`
      },
      'orchestrator restart (SIGTERM)': async () => {
        await client.quiesce()
        const code = await orch?.stop('SIGTERM')
        assert.equal(code, 0, 'the orchestrator stops cleanly on SIGTERM')
        await waitFor('the agent holds no lease once its holder stopped', 30_000, async () => {
          const s = await agentStatus()
          return s.lease.holder === null && s.rpcConnections === 0
        })
        orch = await startOrchestrator()
        client.release()
        return 'stopped with code 0, lease released, started again'
      },
      'orchestrator vanishes (link down, SIGKILL)': async () => {
        await client.quiesce()
        const loaded = (await figures()).rpc.rssBytes
        const host = orchHost()
        const before = await namespacePids(host)
        for (const pid of before) see(pid) // the orchestrator, its llama-server, the forwarder
        // Off the network first, so that not even the kernel's FIN or RST of the killed process
        // reaches the agent: the holder is gone without a word, as a laptop whose lid closed.
        await ip(host, ['link', 'set', host.iface, 'down'])
        await orch?.stop('SIGKILL')
        const killedAt = Date.now()
        // Its llama-server dies with it (pdeathsig): only the forwarder is left in that namespace.
        await waitFor(`nothing of the orchestrator is left (had ${before.join(', ')})`, 15_000, async () =>
          sameMembers(await namespacePids(host), [forwarder?.pid])
        )
        await waitFor('the lease of the vanished holder expires', LEASE_TTL_S * 1000 + 30_000, async () => {
          const s = await agentStatus()
          return s.lease.holder === null && s.rpcConnections === 0
        })
        const expiredS = (Date.now() - killedAt) / 1000
        const freed = (await figures()).rpc.rssBytes
        assert.ok(freed < loaded, `rpc-server frees the model: RSS ${mib(loaded)} -> ${mib(freed)}`)
        await ip(host, ['link', 'set', host.iface, 'up'])
        // A link going down flushes its routes, the multicast one mDNS needs included.
        await ip(host, ['route', 'replace', '224.0.0.0/4', 'dev', host.iface])
        orch = await startOrchestrator()
        client.release()
        const peer = orch.peerId
        await waitFor('the restarted orchestrator holds the lease again', RECOVERY_MS, async () => {
          return (await agentStatus()).lease.holder?.peer === peer
        })
        return `lease expired ${expiredS.toFixed(1)} s after the kill (TTL ${LEASE_TTL_S} s), rpc-server RSS ${mib(loaded)} -> ${mib(freed)}, leased again`
      }
    }

    const names = Object.keys(events)
    const counts = new Map<string, number>()
    const inject = async (name: string): Promise<void> => {
      // Events that stop the front quiesce the client first; the others hit the request in flight.
      const busy = client.busy && !QUIESCED.has(name)
      const plansBefore = replans()
      const done = await (events[name] as () => Promise<string>)()
      counts.set(name, (counts.get(name) ?? 0) + 1)
      await served(`after ${name}`)
      const rss = procFigures(requireAgent().child.pid as number)?.rssBytes ?? 0
      note(
        `${name}: ${done}; ${busy ? 'the request in flight completed; ' : ''}${replans() - plansBefore} plans given up; agent RSS ${mib(rss)}; ${client.completed}/${client.sent} requests completed so far`
      )
    }

    client.start()
    await served('warm-up', 2 * PROMPTS.length)
    // Warm-up is also one round of every event: first runs of each path (code compiled, pools of
    // buffers and the heap grown) are not what the bounds are about; growth after them is.
    for (const name of names) await inject(name)
    const start = await figures()
    const startRestarts = (await agentStatus()).rpcServer.restarts
    note(`start (after warm-up, ${client.completed} requests): ${describeFigures(start)}`)
    for (let i = 0; i < names.length || Date.now() - started < SECONDS * 1000; i++)
      await inject(names[i % names.length] as string)
    await client.stop()

    // The end state is the start's: serving, the lease held, the model loaded. Connections the
    // events broke may take a moment to be closed, so the figures are waited for (bounded), then kept.
    let end = await figures()
    await waitFor('fds and streams back near the start', 30_000, async () => {
      end = await figures()
      return end.agent.fds <= start.agent.fds + BOUND.fds && end.streams <= start.streams + BOUND.streams
    }).catch(() => undefined)
    note(`end: ${describeFigures(end)}`)
    const summary = [
      `start: ${describeFigures(start)}`,
      `end:   ${describeFigures(end)}`,
      `events: ${[...counts].map(([n, c]) => `${n} x${c}`).join(', ')}`,
      `requests: ${client.completed} of ${client.sent} sent completed correctly; ${client.unhealthy} health checks not ok (nothing sent after them)`
    ]
    for (const line of summary) t.diagnostic(line)

    assert.deepEqual(client.failures, [], 'every request sent completes with the expected tokens')
    assert.equal(client.completed, client.sent)
    assert.equal((await agentStatus()).rpcServer.restarts, startRestarts, 'rpc-server never had to restart')
    assert.ok(
      end.agent.rssBytes - start.agent.rssBytes <= BOUND.agentRssBytes,
      `agent RSS ${mib(start.agent.rssBytes)} -> ${mib(end.agent.rssBytes)}`
    )
    assert.ok(
      end.rpc.rssBytes - start.rpc.rssBytes <= BOUND.rpcRssBytes,
      `rpc-server RSS ${mib(start.rpc.rssBytes)} -> ${mib(end.rpc.rssBytes)}`
    )
    assert.ok(
      end.agent.fds <= start.agent.fds + BOUND.fds,
      `agent fds ${start.agent.fds} -> ${end.agent.fds}`
    )
    assert.ok(
      end.agent.sockets <= start.agent.sockets + BOUND.sockets,
      `agent sockets ${start.agent.sockets} -> ${end.agent.sockets}`
    )
    assert.ok(end.streams <= start.streams + BOUND.streams, `streams ${start.streams} -> ${end.streams}`)

    // The last holder leaves: no lease, no RPC connection, no stream left behind.
    assert.equal(await orch?.stop('SIGTERM'), 0)
    await waitFor('no lease held once the orchestrator left', 30_000, async () => {
      const s = await agentStatus()
      return s.lease.holder === null && s.lease.waiting.length === 0 && s.rpcConnections === 0
    })
    // As a person would check it: `mesh-agent status --json` through the control socket.
    const { stdout: shown } = await run(process.execPath, [
      AGENT_BIN,
      'status',
      '--identity',
      agentKey(),
      '--json'
    ])
    const idle = JSON.parse(shown) as AgentStatus
    assert.equal(idle.lease.holder, null)
    assert.ok(idle.mesh.streams <= BOUND.streams, `streams with no orchestrator: ${idle.mesh.streams}`)

    // Nothing outlives the soak: no process of ours, no namespace.
    assert.equal(await requireAgent().stop('SIGTERM'), 0, 'the agent leaves cleanly')
    forwarder?.kill('SIGTERM')
    await waitFor('every process in the namespaces has exited', 15_000, async () => {
      const left = await Promise.all(net().namespaces.map((ns) => namespacePids(ns)))
      return left.every((list) => list.length === 0)
    })
    const survivors = [...pids].filter(([pid, start]) => stillRunning(pid, start)).map(([pid]) => pid)
    assert.deepEqual(
      survivors,
      [],
      'no agent, rpc-server, orchestrator or llama-server the test saw is left running'
    )
    const namespaces = [...net().namespaces]
    await net().destroy()
    const { stdout } = await run('ip', ['netns', 'list'])
    assert.deepEqual(
      namespaces.filter((ns) => stdout.includes(ns)),
      [],
      'every namespace is deleted'
    )
  })
})

/** The events whose injection waits for the request in flight (the front itself goes away). */
const QUIESCED = new Set(['orchestrator restart (SIGTERM)', 'orchestrator vanishes (link down, SIGKILL)'])

function sameMembers(actual: readonly number[], wanted: ReadonlyArray<number | undefined>): boolean {
  return actual.length === wanted.length && wanted.every((pid) => pid !== undefined && actual.includes(pid))
}
