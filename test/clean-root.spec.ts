import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { describe, it } from 'node:test'

const SCRIPT = join(import.meta.dirname, '..', 'scripts', 'clean-root-test.sh')
/** scripts/clean-root-test.sh: 77 means it cannot run here (its reason is its last SKIP line). */
const CANNOT_RUN = 77

function skipReason(): string | false {
  if (process.env['FM_CLEAN_ROOT'] === '0') return 'FM_CLEAN_ROOT=0'
  if (process.platform !== 'linux') return 'Linux only'
  const uid = process.getuid?.()
  if (uid !== 0) return `needs root for debootstrap, chroot and mounts (uid ${uid ?? 'unknown'})`
  return false
}

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the script with its progress on our stderr (the build takes minutes); kills it at the deadline. */
async function runScript(deadlineMs: number): Promise<Run> {
  // Its own process group: at the deadline every process of the run gets the signal, not only
  // bash (which would wait for its foreground command, a build perhaps, before its TERM trap).
  const child = spawn('bash', [SCRIPT], { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-20_000)
    process.stderr.write(chunk)
  })
  const group = (signal: NodeJS.Signals) => () => {
    try {
      process.kill(-(child.pid ?? 0), signal)
    } catch {
      // the group is gone already
    }
  }
  const timers = [setTimeout(group('SIGTERM'), deadlineMs), setTimeout(group('SIGKILL'), deadlineMs + 60_000)]
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  for (const timer of timers) clearTimeout(timer)
  return { code, stdout, stderr }
}

describe(
  'the contributor install on a clean root filesystem',
  { skip: skipReason(), timeout: 45 * 60_000 },
  () => {
    it('join-pool.sh installs from nothing, joins by invite, runs, reruns, and --leave restores every file', async (t) => {
      const run = await runScript(40 * 60_000)
      if (run.code === CANNOT_RUN) {
        t.skip(/SKIP: (.*)/.exec(run.stderr)?.[1] ?? 'clean-root-test.sh cannot run here')
        return
      }
      assert.equal(run.code, 0, run.stderr.slice(-4000))
      const summary = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '{}') as {
        result?: string
        peerId?: string
        rpcProtocol?: string
        entries?: number
        seconds?: Record<string, number>
      }
      assert.equal(summary.result, 'pass')
      assert.match(summary.peerId ?? '', /^12D3Koo/)
      assert.match(summary.rpcProtocol ?? '', /^\d+\.\d+\.\d+$/)
      assert.ok((summary.entries ?? 0) > 1000, 'the comparison covered the whole root filesystem')
      t.diagnostic(`clean root install, seconds: ${JSON.stringify(summary.seconds)}`)
    })
  }
)
