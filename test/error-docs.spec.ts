import assert from 'node:assert/strict'
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'

const root = join(import.meta.dirname, '..')

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => join(e.parentPath, e.name))
}

async function codesInSources(): Promise<Set<string>> {
  const codes = new Set<string>()
  for (const top of ['packages', 'apps']) {
    for (const pkg of await readdir(join(root, top)).catch(() => [])) {
      for (const file of await sourceFiles(join(root, top, pkg, 'src'))) {
        for (const match of (await readFile(file, 'utf8')).matchAll(/'(ERR_[A-Z0-9_]+)'/g))
          codes.add(match[1] as string)
      }
    }
  }
  return codes
}

describe('docs/errors.md', () => {
  it('documents every error code the sources throw, and no code they no longer throw', async () => {
    const documented = new Set(
      [...(await readFile(join(root, 'docs', 'errors.md'), 'utf8')).matchAll(/`(ERR_[A-Z0-9_]+)`/g)].map(
        (m) => m[1]
      )
    )
    const used = await codesInSources()
    assert.ok(used.size > 10, 'the scan found the codes')
    assert.deepEqual([...used].filter((c) => !documented.has(c)).sort(), [], 'undocumented codes')
    assert.deepEqual(
      [...documented].filter((c) => c !== undefined && !used.has(c)).sort(),
      [],
      'documented but unused codes'
    )
  })
})
