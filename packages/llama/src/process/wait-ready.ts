import { setTimeout as sleep } from 'node:timers/promises'
import { ProcessError } from '../errors.ts'
import { exitError, type ManagedProcess } from './managed-process.ts'

export interface WaitReadyOptions {
  readonly timeoutMs: number
  readonly intervalMs?: number | undefined
  readonly signal?: AbortSignal | undefined
}

/**
 * Polls `probe` until it returns true. Fails at once when the process exits meanwhile (with the
 * last lines it wrote), when the deadline passes, or when the signal aborts.
 */
export async function waitReady(
  proc: ManagedProcess,
  probe: (signal: AbortSignal) => Promise<boolean>,
  options: WaitReadyOptions
): Promise<void> {
  const deadline = AbortSignal.timeout(options.timeoutMs)
  const signal = AbortSignal.any(options.signal === undefined ? [deadline] : [deadline, options.signal])
  while (true) {
    if (!proc.running) throw exitError(proc.name, await proc.exited)
    if (signal.aborted) {
      throw new ProcessError(
        deadline.aborted ? 'ERR_PROCESS_NOT_READY' : 'ERR_ABORTED',
        deadline.aborted
          ? `${proc.name} not ready after ${options.timeoutMs} ms`
          : `waiting for ${proc.name} aborted`,
        { cause: signal.reason }
      )
    }
    if (await probe(signal).catch(() => false)) return
    await sleep(options.intervalMs ?? 100, undefined, { signal }).catch(() => {})
  }
}
