import assert from 'node:assert/strict'
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
