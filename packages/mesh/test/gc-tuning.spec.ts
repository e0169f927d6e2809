import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'

const run = promisify(execFile)
const tuning = join(import.meta.dirname, '..', 'src', 'gc-tuning.ts')

/**
 * Major GCs in a fresh process that holds a ~25 MB heap (a mesh node's is about that) and
 * allocates 1 GiB of short-lived 64 KiB Buffers, the way a tunnel end does.
 */
async function majorGcs(tuned: boolean): Promise<number> {
  const script = `
    import { PerformanceObserver, constants } from 'node:perf_hooks'
    if (${tuned}) (await import(${JSON.stringify(tuning)})).tuneGcForBulkTraffic()
    let majors = 0
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++
    }).observe({ entryTypes: ['gc'] })
    const live = Array.from({ length: 250_000 }, (_, i) => ({ i, name: 'x' + i, list: [i] }))
    let sum = 0
    for (let i = 0; i < 16_384; i++) sum += Buffer.allocUnsafeSlow(65_536).length
    await new Promise((resolve) => setTimeout(resolve, 100))
    console.log(JSON.stringify({ majors, live: live.length, sum }))
  `
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 })
  return (JSON.parse(stdout) as { majors: number }).majors
}

describe('GC tuning for bulk traffic', () => {
  it('collects the heap far less often while a process churns through external Buffers', async () => {
    const [plain, tuned] = await Promise.all([majorGcs(false), majorGcs(true)])
    assert.ok(plain >= 6, `expected the default settings to collect often, saw ${plain} major GCs`)
    assert.ok(tuned * 3 <= plain, `tuned: ${tuned} major GCs, default: ${plain}`)
  })
})
