import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { withBuildLock } from '../src/binaries/build-lock.ts'
import { silentLogger } from '../src/index.ts'

let dir: string
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-lock-'))
})
after(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('withBuildLock', () => {
  it('holds our pid while working and removes the lock after', async () => {
    const lock = join(dir, 'a.lock')
    const seen = await withBuildLock(lock, silentLogger(), async () => await readFile(lock, 'utf8'))
    assert.equal(seen, String(process.pid))
    await assert.rejects(readFile(lock), { code: 'ENOENT' })
  })

  it('takes over a lock whose holder is dead', async () => {
    const lock = join(dir, 'b.lock')
    const dead = spawn(process.execPath, ['-e', ''])
    await new Promise((resolve) => dead.once('exit', resolve))
    await writeFile(lock, String(dead.pid))
    assert.equal(await withBuildLock(lock, silentLogger(), () => Promise.resolve('ran')), 'ran')
  })

  it('runs work one at a time', async () => {
    const lock = join(dir, 'c.lock')
    const order: string[] = []
    const job = (name: string) =>
      withBuildLock(lock, silentLogger(), async () => {
        order.push(`${name}:start`)
        await new Promise((resolve) => setTimeout(resolve, 50))
        order.push(`${name}:end`)
      })
    await Promise.all([job('a'), job('b')])
    assert.deepEqual(
      order.map((s) => s.split(':')[1]),
      ['start', 'end', 'start', 'end']
    )
  })
})
