import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { describeExit, silentLogger, startProcess } from '../src/index.ts'

const logger = silentLogger()
const node = process.execPath

describe('startProcess', () => {
  it('reports a clean stop as requested', async () => {
    const proc = startProcess({
      name: 'sleeper',
      command: node,
      args: ['-e', 'setInterval(() => {}, 1000)'],
      logger
    })
    assert.equal(proc.running, true)
    const exit = await proc.stop()
    assert.equal(exit.requested, true)
    assert.equal(exit.signal, 'SIGTERM')
    assert.equal(proc.running, false)
  })

  it('escalates to SIGKILL when SIGTERM is ignored', async () => {
    const script = "process.on('SIGTERM', () => {}); console.log('ready'); setInterval(() => {}, 1000)"
    let ready: () => void = () => {}
    const started = new Promise<void>((resolve) => (ready = resolve))
    const proc = startProcess({
      name: 'stubborn',
      command: node,
      args: ['-e', script],
      logger,
      stopTimeoutMs: 200,
      onLine: (line) => line === 'ready' && ready()
    })
    await started
    const exit = await proc.stop()
    assert.equal(exit.signal, 'SIGKILL')
  })

  it('reports an unexpected death with its last lines', async () => {
    const proc = startProcess({
      name: 'crasher',
      command: node,
      args: ['-e', "console.error('about to fail'); process.exit(3)"],
      logger
    })
    const exit = await proc.exited
    assert.equal(exit.requested, false)
    assert.equal(exit.code, 3)
    assert.deepEqual(exit.tail, ['about to fail'])
    assert.equal(describeExit(exit), 'exited with code 3')
  })

  it('reports a binary that cannot be started', async () => {
    const proc = startProcess({ name: 'ghost', command: '/nonexistent/binary', args: [], logger })
    const exit = await proc.exited
    assert.match(describeExit(exit), /could not start: .*ENOENT/)
    assert.equal(proc.running, false)
  })
})

describe(
  'startProcess on Linux',
  { skip: process.platform === 'linux' ? false : 'parent-death signal is Linux only' },
  () => {
    it('takes the child down when its parent is killed with SIGKILL', async () => {
      const { spawn } = await import('node:child_process')
      const module = new URL('../src/process/managed-process.ts', import.meta.url).href
      const logger = new URL('../src/logger.ts', import.meta.url).href
      const script = `
      const { startProcess } = await import(${JSON.stringify(module)})
      const { silentLogger } = await import(${JSON.stringify(logger)})
      const child = startProcess({ name: 'orphan', command: process.execPath, args: ['-e', 'setInterval(() => {}, 1000)'], logger: silentLogger() })
      console.log(child.pid)
      setInterval(() => {}, 1000)`
      const parent = spawn(process.execPath, ['--input-type=module', '-e', script], {
        stdio: ['ignore', 'pipe', 'inherit']
      })
      const childPid = await new Promise<number>((resolve) =>
        parent.stdout.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim())))
      )
      assert.ok(childPid > 0)
      parent.kill('SIGKILL')
      const deadline = Date.now() + 5_000
      let alive = true
      while (alive && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50))
        // A killed orphan stays a zombie until init reaps it: that counts as dead.
        const stat = await readFile(`/proc/${childPid}/stat`, 'utf8').catch(() => '')
        alive = stat !== '' && !/^\d+ \(.*\) Z/.test(stat)
      }
      assert.equal(alive, false, 'the child outlived its parent')
    })
  }
)
