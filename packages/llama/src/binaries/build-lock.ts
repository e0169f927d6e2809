import { mkdir, open, readFile, rm, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'

/**
 * Runs `work` while holding an exclusive lock file (it holds our pid). Two builds of the same
 * binaries would waste 12 minutes of CPU each; the second waits for the first, then finds the cache.
 * A lock whose pid is gone is stale and taken over.
 */
export async function withBuildLock<T>(path: string, logger: Logger, work: () => Promise<T>): Promise<T> {
  await mkdir(dirname(path), { recursive: true })
  let waiting = false
  while (true) {
    try {
      const handle = await open(path, 'wx')
      await handle.writeFile(String(process.pid))
      await handle.close()
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const content = (await readFile(path, 'utf8').catch(() => '')).trim()
    if (content === '' && (await youngerThan(path, 10_000))) {
      await sleep(200) // its holder has created it and is about to write its pid
      continue
    }
    const holder = Number(content)
    if (!Number.isInteger(holder) || holder <= 0 || !pidAlive(holder)) {
      await rm(path, { force: true })
      continue
    }
    if (!waiting) logger.info({ lock: path, pid: holder }, 'waiting for another build to finish')
    waiting = true
    await sleep(500)
  }
  try {
    return await work()
  } finally {
    await rm(path, { force: true })
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

async function youngerThan(path: string, ms: number): Promise<boolean> {
  const info = await stat(path).catch(() => undefined)
  return info !== undefined && Date.now() - info.mtimeMs < ms
}
