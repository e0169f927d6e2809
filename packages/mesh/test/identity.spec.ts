import assert from 'node:assert/strict'
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { loadOrCreateIdentity } from '../src/index.ts'

let dir: string
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-identity-'))
})
after(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('loadOrCreateIdentity', () => {
  it('creates a key readable only by its owner, then loads the same peer id', async () => {
    const path = join(dir, 'sub', 'agent.key')
    const first = await loadOrCreateIdentity(path)
    assert.equal(first.created, true)
    assert.equal((await stat(path)).mode & 0o777, 0o600)
    const second = await loadOrCreateIdentity(path)
    assert.equal(second.created, false)
    assert.equal(second.peerId, first.peerId)
  })

  it('keeps one key when two first starts race', async () => {
    const path = join(dir, 'race.key')
    const [a, b] = await Promise.all([loadOrCreateIdentity(path), loadOrCreateIdentity(path)])
    assert.equal(a.peerId, b.peerId)
    assert.equal((await loadOrCreateIdentity(path)).peerId, a.peerId)
  })

  it('refuses a corrupt key and leaves it in place', async () => {
    const path = join(dir, 'corrupt.key')
    await writeFile(path, '{"version":1,"type":"Ed25519","privateKey":"bm90IGEga2V5"}', { mode: 0o600 })
    await assert.rejects(loadOrCreateIdentity(path), { code: 'ERR_IDENTITY_CORRUPT' })
    assert.match(await readFile(path, 'utf8'), /bm90IGEga2V5/)
  })

  it('refuses a key other users can read', async () => {
    const path = join(dir, 'open.key')
    await loadOrCreateIdentity(path)
    await chmod(path, 0o644)
    await assert.rejects(loadOrCreateIdentity(path), { code: 'ERR_IDENTITY_PERMISSIONS' })
  })
})
