import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { spawnAgent, loopbackJoinArgs } from './fixtures/agent-process.ts'
import { createScratch, testBinaries, type Scratch } from './fixtures/llama.ts'

const run = promisify(execFile)
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
const ORCH = join(import.meta.dirname, '..', 'apps', 'mesh-orch', 'src', 'bin.ts')
const hasSystemdAnalyze = existsSync('/usr/bin/systemd-analyze') || existsSync('/bin/systemd-analyze')

/** The arguments of a systemd ExecStart line: double-quoted, `\\` escapes, `%%` for `%`. */
function execStart(unit: string): string[] {
  const line = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? ''
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) =>
    (m[1] ?? '').replace(/\\(.)/g, '$1').replaceAll('%%', '%')
  )
}

describe(
  'mesh-agent install-service',
  { skip: process.platform !== 'linux' && 'Linux only', timeout: 120_000 },
  () => {
    let scratch: Scratch
    let env: NodeJS.ProcessEnv
    const unitPath = () =>
      join(scratch.dir, 'home', '.config', 'systemd', 'user', 'frankenstein-mesh-agent.service')
    const agent = async (args: string[]) => {
      try {
        const { stdout } = await run(process.execPath, [AGENT, ...args], { env })
        return { code: 0, stdout, stderr: '' }
      } catch (err) {
        const e = err as { code?: number; stdout?: string; stderr?: string }
        return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
      }
    }

    before(async () => {
      scratch = await createScratch('service')
      env = {
        ...process.env,
        HOME: join(scratch.dir, 'home'),
        XDG_CONFIG_HOME: join(scratch.dir, 'home', '.config')
      }
    })
    after(async () => {
      await scratch.remove()
    })

    it('refuses join arguments that join would refuse, and writes nothing', async () => {
      const result = await agent([
        'install-service',
        '--no-start',
        '--',
        '--pool',
        'unknown',
        '--identity',
        join(scratch.dir, 'a.key')
      ])
      assert.notEqual(result.code, 0)
      assert.match(result.stderr, /ERR_NO_INVITE/)
      assert.equal(existsSync(unitPath()), false)
    })

    it('writes a user unit whose command really joins the pool, and uninstall-service removes it', async () => {
      const bins = await testBinaries()
      const invite = (
        await run(process.execPath, [
          ORCH,
          'pool',
          'invite',
          '--pool',
          'svc',
          '--identity',
          join(scratch.dir, 'orch.key')
        ])
      ).stdout.trim()
      const joinArgs = [
        '--pool',
        invite,
        ...loopbackJoinArgs({
          identity: join(scratch.dir, 'agent.key'),
          rpcServer: bins.rpcServer,
          mdns: false
        }),
        '--memory',
        '1GiB'
      ]
      const installed = await agent(['install-service', '--no-start', '--', ...joinArgs])
      assert.equal(installed.code, 0, installed.stderr)
      assert.match(installed.stdout, /^pools {5}svc$/m)
      const unit = await readFile(unitPath(), 'utf8')
      assert.match(unit, /^Restart=on-failure$/m)
      assert.match(unit, /^WantedBy=default\.target$/m)
      const command = execStart(unit)
      assert.deepEqual(command.slice(1), [AGENT, 'join', ...joinArgs])
      if (hasSystemdAnalyze) {
        const verified = await run('systemd-analyze', ['verify', unitPath()]).then(
          () => 0,
          (err: unknown) => (err as { code?: number }).code ?? -1
        )
        assert.equal(verified, 0, 'systemd-analyze verify accepts the unit')
      }

      // What the unit would run, run here: the agent joins and is ready.
      const [node = '', bin = '', , ...args] = command
      const running = await spawnAgent(args, { command: [node, bin], trustOnFirstUse: false })
      assert.match(running.peerId, /^12D3Koo/)
      assert.equal(await running.stop(), 0)

      const removed = await agent(['uninstall-service'])
      assert.equal(removed.code, 0, removed.stderr)
      assert.equal(existsSync(unitPath()), false)
    })
  }
)
