import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { after, describe, it } from 'node:test'
import { promisify } from 'node:util'
import {
  changeAddress,
  createNetwork,
  netnsAvailable,
  type Host,
  type Network,
  type NetworkInit
} from './fixtures/netns.ts'
import { alive } from './fixtures/proc-figures.ts'

const available = await netnsAvailable()
const skip = available.ok ? false : available.reason

/** Echoes every byte back; prints the port it bound. */
const ECHO_SERVER = `
const server = require('node:net').createServer((socket) => socket.pipe(socket))
server.listen(0, '0.0.0.0', () => console.log('port ' + server.address().port))`

/** Sends N bytes, waits for them back, prints the time it took; exits 1 on error or timeout. */
const ECHO_CLIENT = `
const [host, port, timeoutMs, bytes] = process.argv.slice(1)
const started = performance.now()
const socket = require('node:net').connect({ host, port: Number(port), timeout: Number(timeoutMs) })
let received = 0
socket.once('connect', () => socket.write(Buffer.alloc(Number(bytes), 'x')))
socket.on('data', (chunk) => {
  received += chunk.length
  if (received >= Number(bytes)) { console.log('echoed ' + Math.round(performance.now() - started)); process.exit(0) }
})
socket.once('timeout', () => { console.log('timeout'); process.exit(1) })
socket.once('error', (err) => { console.log('error ' + err.code); process.exit(1) })`

/** Joins the mDNS group naming no interface (the 224/4 route picks it), prints the first sender. */
const MDNS_LISTENER = `
const socket = require('node:dgram').createSocket({ type: 'udp4', reuseAddr: true })
socket.on('message', (_, from) => { console.log('from ' + from.address); process.exit(0) })
socket.bind(5353, () => { socket.addMembership('224.0.0.251'); console.log('joined') })
setTimeout(() => { console.log('silence'); process.exit(0) }, Number(process.argv[1]))`

const MDNS_SENDER = `
const socket = require('node:dgram').createSocket('udp4')
let sent = 0
const timer = setInterval(() => {
  socket.send('hello', 5353, '224.0.0.251')
  if (++sent === 5) { clearInterval(timer); setTimeout(() => socket.close(), 50) }
}, 100)`

/** Ignores SIGTERM and has a child of its own: only a SIGKILL to the whole group ends both. */
const STUBBORN = `
const child = require('node:child_process').spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'])
process.on('SIGTERM', () => {})
console.log('child ' + child.pid)
setInterval(() => {}, 1000)`

const UNREACHABLE_WAIT_MS = 1_500
const LINE_WAIT_MS = 5_000
/** How long a listener waits for mDNS before calling it silence. */
const MDNS_WINDOW_MS = 3_000

describe('network namespace harness', { timeout: 90_000 }, () => {
  const networks: Network[] = []
  const newNetwork = async (init: Partial<NetworkInit> = {}): Promise<Network> => {
    const network = await createNetwork({ name: 'harness', hosts: 2, ...init })
    networks.push(network)
    return network
  }
  after(async () => {
    await Promise.all(networks.map((n) => n.destroy()))
  })

  // Made on first use rather than in `before`, so a skipped run creates nothing.
  let twoHosts: Promise<TwoHosts> | undefined
  const shared = (): Promise<TwoHosts> =>
    (twoHosts ??= newNetwork({ hosts: 2 }).then(async (net) => {
      const ports = new Map<Host, number>()
      for (const host of net.hosts) ports.set(host, await startEchoServer(net, host))
      const [a, b] = net.hosts as [Host, Host]
      return { net, a, b, ports }
    }))

  it('gives the hosts consecutive addresses of one subnet and short unique names', { skip }, async () => {
    const { net, a, b } = await shared()
    const [, network] = /^(10\.77\.\d+)\.1$/.exec(a.address) ?? []
    assert.ok(network !== undefined, a.address)
    assert.equal(b.address, `${network}.2`)
    for (const host of net.hosts) {
      assert.ok(host.iface.length <= 15 && host.iface.includes(net.id), host.iface)
      assert.ok(host.name.includes(net.id), host.name)
    }
  })

  it('lets each host reach the other by address', { skip }, async () => {
    const { net, a, b, ports } = await shared()
    assert.equal(await reaches(net, a, b, ports), true)
    assert.equal(await reaches(net, b, a, ports), true)
  })

  it('carries a TCP connection between node processes spawned in the namespaces', { skip }, async () => {
    const { net, a, b, ports } = await shared()
    const client = spawnNode(net, a, ECHO_CLIENT, [b.address, portOf(ports, b), '2000', '4'])
    const [line] = await client.next(/^(echoed \d+|timeout|error .*)$/, LINE_WAIT_MS)
    assert.match(line, /^echoed \d+$/)
  })

  it('delivers mDNS multicast from one namespace to another', { skip }, async () => {
    const { net, a, b } = await shared()
    assert.equal(await hearsMdns(net, a, b), a.address)
  })

  it('applies a tbf qdisc on the host veth, and it limits the rate', { skip }, async () => {
    const { net, a, b, ports } = await shared()
    await net.shape(a, { rateMbit: 8 })
    const shown = await net.exec(a, 'tc', ['qdisc', 'show', 'dev', a.iface])
    assert.match(shown.stdout, /qdisc tbf .*rate 8Mbit/)
    // 1 MiB at 8 Mbit/s takes ~1.05 s; unshaped, a veth moves it in milliseconds.
    const elapsed = await echoTime(net, a, b, portOf(ports, b), 1024 * 1024)
    assert.ok(elapsed >= 700, `1 MiB took ${String(elapsed)} ms`)
  })

  it('cuts two hosts off from each other, and only from each other, with isolate()', { skip }, async () => {
    const net = await newNetwork({ hosts: 3 })
    const [a, b, c] = net.hosts as [Host, Host, Host]
    const ports = new Map<Host, number>()
    for (const host of net.hosts) ports.set(host, await startEchoServer(net, host))
    await net.isolate(a, b)
    assert.equal(await reaches(net, a, b, ports), false, 'a reaches b')
    assert.equal(await reaches(net, b, a, ports), false, 'b reaches a')
    const open: Array<[Host, Host]> = [
      [c, a],
      [c, b],
      [a, c],
      [b, c]
    ]
    for (const [from, to] of open)
      assert.equal(await reaches(net, from, to, ports), true, `${from.address} -> ${to.address}`)
    assert.equal(await hearsMdns(net, a, b), undefined, 'b hears mDNS from a')
    assert.equal(await hearsMdns(net, a, c), a.address, 'c hears mDNS from a')
  })

  it('moves a host to a new address with changeAddress(), isolation included', { skip }, async () => {
    const net = await newNetwork({ hosts: 3 })
    const [a, b, c] = net.hosts as [Host, Host, Host]
    const port = await startEchoServer(net, b)
    await net.isolate(b, c)
    const old = b.address
    const moved = old.replace(/\.\d+$/, '.200')
    await changeAddress(b, moved)
    assert.equal(b.address, moved)
    assert.equal(await echoes(net, a, moved, port), true, 'the new address answers')
    assert.equal(await echoes(net, a, old, port), false, 'the old address answers')
    assert.equal(await echoes(net, c, moved, port), false, 'the isolated host reaches the new address')
    assert.equal(await hearsMdns(net, b, a), moved, 'mDNS goes out from the new address')
  })

  it('refuses an impossible network before creating anything', { skip }, async () => {
    const existing = await namespaceList()
    await assert.rejects(createNetwork({ name: 'harness', hosts: 3, subnet: '10.77.1.0/30' }), {
      code: 'ERR_NETNS_INVALID'
    })
    await assert.rejects(createNetwork({ name: 'Bad Name', hosts: 1 }), { code: 'ERR_NETNS_INVALID' })
    assert.deepEqual(await namespaceList(), existing)
  })

  it(
    'leaves no namespace and no process behind after destroy(), however often it is called',
    { skip },
    async () => {
      const net = await newNetwork({ hosts: 2, killGraceMs: 500 })
      const [a, b] = net.hosts as [Host, Host]
      const server = spawnNode(net, a, ECHO_SERVER)
      await server.next(/^port \d+$/, LINE_WAIT_MS)
      const stubborn = spawnNode(net, b, STUBBORN)
      const grandchild = Number((await stubborn.next(/^child (\d+)$/, LINE_WAIT_MS))[1])
      const pids = [server.pid, stubborn.pid, grandchild]
      await net.destroy()
      await net.destroy()
      assert.deepEqual(
        (await namespaceList()).filter((ns) => ns.includes(net.id)),
        []
      )
      await waitUntil(() => pids.every((pid) => pid === undefined || !alive(pid)), 5_000, 'processes to end')
      await assert.rejects(net.exec(a, 'true'), { code: 'ERR_NETNS_DESTROYED' })
    }
  )
})

interface TwoHosts {
  readonly net: Network
  readonly a: Host
  readonly b: Host
  readonly ports: Map<Host, number>
}

function portOf(ports: Map<Host, number>, host: Host): string {
  const port = ports.get(host)
  assert.ok(port !== undefined, `no echo server on ${host.name}`)
  return String(port)
}

async function startEchoServer(net: Network, host: Host): Promise<number> {
  const server = spawnNode(net, host, ECHO_SERVER)
  return Number((await server.next(/^port (\d+)$/, LINE_WAIT_MS))[1])
}

/** ping when the machine has it (this one does not), else a TCP round trip to the host's echo server. */
async function reaches(net: Network, from: Host, to: Host, ports: Map<Host, number>): Promise<boolean> {
  const ping = await net.exec(from, 'ping', ['-c1', '-W1', to.address], { timeoutMs: 5_000 })
  if (!ping.stderr.includes('exec of "ping" failed')) return ping.code === 0
  return echoes(net, from, to.address, Number(portOf(ports, to)))
}

async function echoes(net: Network, from: Host, address: string, port: number): Promise<boolean> {
  const args = ['-e', ECHO_CLIENT, address, String(port), String(UNREACHABLE_WAIT_MS), '4']
  const result = await net.exec(from, process.execPath, args, { timeoutMs: UNREACHABLE_WAIT_MS + 3_000 })
  return result.code === 0
}

async function echoTime(net: Network, from: Host, to: Host, port: string, bytes: number): Promise<number> {
  const args = ['-e', ECHO_CLIENT, to.address, port, '10000', String(bytes)]
  const result = await net.exec(from, process.execPath, args, { timeoutMs: 15_000 })
  const [, ms] = /^echoed (\d+)$/m.exec(result.stdout) ?? []
  assert.ok(ms !== undefined, `echo failed: ${result.stdout}${result.stderr}`)
  return Number(ms)
}

/** The address `to` heard mDNS from while `from` sent five packets, or undefined for silence. */
async function hearsMdns(net: Network, from: Host, to: Host): Promise<string | undefined> {
  const listener = spawnNode(net, to, MDNS_LISTENER, [String(MDNS_WINDOW_MS)])
  await listener.next(/^joined$/, LINE_WAIT_MS)
  const sent = await net.exec(from, process.execPath, ['-e', MDNS_SENDER], { timeoutMs: 5_000 })
  assert.equal(sent.code, 0, sent.stderr)
  const [line] = await listener.next(/^(from \S+|silence)$/, LINE_WAIT_MS)
  return line.startsWith('from ') ? line.slice('from '.length) : undefined
}

interface NodeChild {
  readonly pid: number | undefined
  /** The next matching line after the last one returned; lines printed before the call count too. */
  next(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>
}

/** Runs a node script in the namespace, keeping every stdout line so none is lost between two waits. */
function spawnNode(net: Network, host: Host, script: string, args: readonly string[] = []): NodeChild {
  const child = net.spawn(host, process.execPath, ['-e', script, ...args], {
    stdio: ['ignore', 'pipe', 'inherit']
  })
  const lines: string[] = []
  const changed = new EventEmitter()
  createInterface({ input: child.stdout as Readable }).on('line', (line) => {
    lines.push(line)
    changed.emit('change')
  })
  child.once('exit', () => changed.emit('change'))
  let cursor = 0
  const scan = (pattern: RegExp): RegExpExecArray | null => {
    while (cursor < lines.length) {
      const match = pattern.exec(lines[cursor++] as string)
      if (match !== null) return match
    }
    return null
  }
  const ended = (): boolean => child.exitCode !== null || child.signalCode !== null
  const next = (pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> =>
    new Promise((resolve, reject) => {
      const settle = (fn: () => void): void => {
        clearTimeout(timer)
        changed.off('change', check)
        fn()
      }
      const check = (): void => {
        const match = scan(pattern)
        if (match !== null) settle(() => resolve(match))
        else if (ended()) settle(() => reject(new Error(`exited before printing ${String(pattern)}`)))
      }
      const timer = setTimeout(() => {
        settle(() => reject(new Error(`no ${String(pattern)} within ${String(timeoutMs)} ms`)))
      }, timeoutMs)
      changed.on('change', check)
      check()
    })
  return { pid: child.pid, next }
}

async function waitUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function namespaceList(): Promise<string[]> {
  const { stdout } = await promisify(execFile)('ip', ['netns', 'list'], { timeout: 10_000 })
  return stdout
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name !== '')
}
