import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'

const SCRIPT = join(import.meta.dirname, '..', 'scripts', 'join-pool.sh')
const MANIFEST_LIB = join(import.meta.dirname, '..', 'scripts', 'lib', 'manifest.sh')

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

describe('scripts/lib/manifest.sh (what --leave removes)', () => {
  let dir: string
  let home: string
  let manifest: string
  /** Runs bash with the manifest functions loaded, HOME and $manifest in the scratch folder. */
  const withManifest = async (script: string) =>
    (
      await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', `. "${MANIFEST_LIB}"\n${script}`], {
        env: { PATH: process.env['PATH'], HOME: home, manifest },
        timeout: 30_000
      })
    ).stdout

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-manifest-'))
    home = join(dir, 'home')
    manifest = join(dir, 'manifest')
    await mkdir(join(home, '.config', 'mine'), { recursive: true })
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('claims what did not exist (and its missing folders), removes only that, and says so', async () => {
    await withManifest(
      `fm_manifest_claim "$HOME/.config/mine" "$HOME/.config/fm/agent.key" "$HOME/.cache/a/b"
       mkdir -p "$HOME/.config/fm" "$HOME/.cache/a/b" && touch "$HOME/.config/fm/agent.key" "$HOME/.config/mine/x"`
    )
    const lines = (await readFile(manifest, 'utf8')).trim().split('\n')
    assert.deepEqual(lines, [
      `tree\t${home}/.config/fm/agent.key`,
      `dir\t${home}/.config/fm`,
      `tree\t${home}/.cache/a/b`,
      `dir\t${home}/.cache/a`,
      `dir\t${home}/.cache`
    ])
    await writeFile(join(home, '.cache', 'a', 'not-ours'), 'x')
    const out = await withManifest('fm_manifest_remove')
    assert.match(out, /removed {3}.*\/\.config\/fm\/agent\.key/)
    assert.equal(existsSync(join(home, '.config', 'fm')), false)
    assert.equal(existsSync(join(home, '.cache', 'a', 'b')), false)
    assert.equal(existsSync(join(home, '.cache', 'a', 'not-ours')), true, 'a folder still in use stays')
    assert.equal(existsSync(join(home, '.config', 'mine', 'x')), true, 'what existed before stays')
    assert.equal(existsSync(manifest), false)
  })

  it('claims only the entries new in a folder it found, however long the listing was', async () => {
    // A listing past a pipe's buffer: grep -q quits early, and a pipe from printf would then fail
    // under pipefail and make every entry look new.
    const crowd = join(home, 'crowd')
    await mkdir(crowd)
    await Promise.all(Array.from({ length: 3000 }, (_, i) => writeFile(join(crowd, `old-${i}`), '')))
    await withManifest(
      `before=$(fm_manifest_entries "$HOME/crowd")
       touch "$HOME/crowd/new-one"
       fm_manifest_claim_new "$HOME/crowd" "$before"`
    )
    const lines = (await readFile(manifest, 'utf8')).trim().split('\n')
    assert.deepEqual(lines, [`tree\t${crowd}/new-one`])
    await rm(manifest)
  })

  it('refuses to remove the home itself or a path through .. even when the manifest lists them', async () => {
    // Not `/` itself: a broken check must not be able to do harm beyond the scratch folder.
    await writeFile(manifest, `tree\t${home}\ntree\t${home}/../home\ntree\t${dir}/./home\n`)
    const { stderr } = await promisify(execFile)(
      'bash',
      ['-euo', 'pipefail', '-c', `. "${MANIFEST_LIB}"\nfm_manifest_remove`],
      {
        env: { PATH: process.env['PATH'], HOME: home, manifest },
        cwd: dir,
        timeout: 30_000
      }
    )
    assert.match(stderr, /not removing/)
    assert.equal(existsSync(join(home, '.config', 'mine', 'x')), true)
  })
})
