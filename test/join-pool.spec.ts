import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'

const SCRIPT = join(import.meta.dirname, '..', 'scripts', 'join-pool.sh')

/** Only arguments that are refused or answered before the script touches anything. */
async function joinPool(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)('bash', [SCRIPT, ...args], { timeout: 30_000 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string }
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

describe('scripts/join-pool.sh arguments', () => {
  it('explains itself with --help', async () => {
    const help = await joinPool(['--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /--pool <invite\|name/)
    assert.match(help.stdout, /--leave/)
  })

  for (const [args, message] of [
    [['--bogus'], /unknown argument: --bogus/],
    [[], /give at least one --pool/],
    [['--pool'], /--pool needs a value/],
    [['--pool', '--leave'], /--pool needs a value/],
    [['--leave', '--pool', 'a'], /--leave takes no other argument/]
  ] as const) {
    it(`refuses ${JSON.stringify(args)} with exit status 2 and says why`, async () => {
      const result = await joinPool([...args])
      assert.equal(result.code, 2)
      assert.match(result.stderr, message)
      assert.match(result.stderr, /--help/)
    })
  }
})
