import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { readFile, readdir, readlink } from 'node:fs/promises'
import { promisify } from 'node:util'

/** A TCP socket a process listens on, as the kernel reports it. */
export interface ListeningSocket {
  readonly address: string
  readonly port: number
  readonly loopback: boolean
}

const LISTEN = '0A'

/**
 * The TCP sockets `pid` listens on: from /proc on Linux, from lsof on macOS. Undefined when the
 * platform offers neither, so callers can say they could not check rather than pretend they did.
 */
export async function listeningSockets(pid: number): Promise<ListeningSocket[] | undefined> {
  if (process.platform === 'linux') return await fromProc(pid)
  if (process.platform === 'darwin') return await fromLsof(pid)
  return undefined
}

/**
 * Every socket listening on `port` in our network namespace, whoever owns it (Linux): for an
 * rpc-server someone else started. Undefined elsewhere.
 */
export async function listenersOnPort(port: number): Promise<ListeningSocket[] | undefined> {
  if (process.platform !== 'linux') return undefined
  const sockets: ListeningSocket[] = []
  for (const [file, v6] of [
    ['tcp', false],
    ['tcp6', true]
  ] as const) {
    const table = await readFile(`/proc/net/${file}`, 'utf8').catch(() => '')
    for (const row of parseProcNetTcp(table, v6)) if (row.socket.port === port) sockets.push(row.socket)
  }
  return sockets
}

async function fromProc(pid: number): Promise<ListeningSocket[]> {
  const inodes = new Set<string>()
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1]
    if (inode !== undefined) inodes.add(inode)
  }
  const sockets: ListeningSocket[] = []
  for (const [file, v6] of [
    ['tcp', false],
    ['tcp6', true]
  ] as const) {
    const table = await readFile(`/proc/${pid}/net/${file}`, 'utf8').catch(() => '')
    for (const row of parseProcNetTcp(table, v6)) if (inodes.has(row.inode)) sockets.push(row.socket)
  }
  return sockets
}

/** Listening rows of /proc/net/tcp or tcp6: local address, port and socket inode. */
export function parseProcNetTcp(
  table: string,
  v6: boolean
): Array<{ inode: string; socket: ListeningSocket }> {
  const rows: Array<{ inode: string; socket: ListeningSocket }> = []
  for (const line of table.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/)
    const [local, state, inode] = [fields[1], fields[3], fields[9]]
    if (local === undefined || state !== LISTEN || inode === undefined) continue
    const [hex = '', portHex = ''] = local.split(':')
    const address = v6 ? ipv6FromProc(hex) : ipv4FromProc(hex)
    rows.push({ inode, socket: { address, port: parseInt(portHex, 16), loopback: isLoopback(address) } })
  }
  return rows
}

/** /proc writes each 32-bit word of an address in host (little-endian) order. */
function words(hex: string): number[][] {
  const out: number[][] = []
  for (let i = 0; i < hex.length; i += 8) {
    const word = hex.slice(i, i + 8)
    out.push([6, 4, 2, 0].map((at) => parseInt(word.slice(at, at + 2), 16)))
  }
  return out
}

function ipv4FromProc(hex: string): string {
  return (words(hex)[0] ?? []).join('.')
}

function ipv6FromProc(hex: string): string {
  const bytes = words(hex).flat()
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16))
  return groups.join(':')
}

export function isLoopback(address: string): boolean {
  if (/^127\./.test(address)) return true
  const groups = address.split(':')
  if (groups.length === 8) {
    const n = groups.map((g) => parseInt(g, 16))
    if (n.slice(0, 7).every((g) => g === 0) && n[7] === 1) return true // ::1
    // ::ffff:127.x.x.x
    if (n.slice(0, 5).every((g) => g === 0) && n[5] === 0xffff && (n[6] ?? 0) >> 8 === 127) return true
    return false
  }
  return address === '::1' || address === 'localhost'
}

async function fromLsof(pid: number): Promise<ListeningSocket[]> {
  const { stdout } = await promisify(execFile)('lsof', [
    '-nP',
    '-a',
    '-p',
    String(pid),
    '-iTCP',
    '-sTCP:LISTEN',
    '-Fn'
  ]).catch((err: unknown) => {
    // lsof exits 1 when nothing matches.
    const out = (err as { stdout?: string }).stdout
    if (typeof out === 'string') return { stdout: out }
    throw err
  })
  return parseLsof(stdout)
}

/** `lsof -Fn` lines: `n127.0.0.1:8080`, `n*:8080`, `n[::1]:8080`. */
export function parseLsof(output: string): ListeningSocket[] {
  const sockets: ListeningSocket[] = []
  for (const line of output.split('\n')) {
    if (!line.startsWith('n')) continue
    const match = /^n\[?([^\]]*?)\]?:(\d+)$/.exec(line)
    if (match === null) continue
    const address = match[1] === '*' ? '0.0.0.0' : (match[1] ?? '')
    sockets.push({ address, port: Number(match[2]), loopback: isLoopback(address) })
  }
  return sockets
}

/** Resident memory of a process in bytes, from /proc (Linux; undefined elsewhere or once it is gone). */
export function residentBytes(pid: number | undefined): number | undefined {
  if (pid === undefined || process.platform !== 'linux') return undefined
  try {
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return kb === undefined ? undefined : Number(kb) * 1024
  } catch {
    return undefined
  }
}
