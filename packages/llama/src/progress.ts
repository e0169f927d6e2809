import { SingleBar } from 'cli-progress'
import type { Logger } from 'pino'

export interface Progress {
  /** Absolute amount done so far, in the unit of `total`. */
  update(done: number, total?: number): void
  finish(): void
}

export interface ProgressInit {
  readonly logger: Logger
  /** What is progressing, for the bar's label and the log lines: `llama.cpp build`. */
  readonly label: string
  readonly total: number
  readonly unit?: 'steps' | 'bytes' | undefined
  /** Draw a bar here when it is a terminal; otherwise write a log line every tenth. */
  readonly stream?: NodeJS.WriteStream | undefined
}

/**
 * A progress bar on a terminal (cli-progress), quiet line-oriented log records otherwise, so
 * that CI logs and journald get ten lines instead of ten thousand carriage returns.
 */
export function createProgress(init: ProgressInit): Progress {
  const stream = init.stream ?? process.stderr
  return stream.isTTY ? barProgress(init, stream) : logProgress(init)
}

function barProgress(init: ProgressInit, stream: NodeJS.WriteStream): Progress {
  const bytes = init.unit === 'bytes'
  const bar = new SingleBar({
    stream,
    format: `${init.label} [{bar}] {percentage}% | ${bytes ? '{done} / {all} MiB' : '{value}/{total}'} | {duration_formatted}`,
    hideCursor: true,
    clearOnComplete: false
  })
  const mib = (n: number): string => (n / 1024 ** 2).toFixed(0)
  bar.start(init.total, 0, { done: mib(0), all: mib(init.total) })
  let total = init.total
  return {
    update(done, newTotal) {
      if (newTotal !== undefined && newTotal !== total) {
        total = newTotal
        bar.setTotal(total)
      }
      bar.update(done, { done: mib(done), all: mib(total) })
    },
    finish() {
      bar.update(total, { done: mib(total), all: mib(total) })
      bar.stop()
    }
  }
}

function logProgress(init: ProgressInit): Progress {
  let total = init.total
  let lastTenth = -1
  const started = Date.now()
  return {
    update(done, newTotal) {
      total = newTotal ?? total
      const tenth = total > 0 ? Math.floor((done / total) * 10) : 0
      if (tenth <= lastTenth || tenth >= 10) return
      lastTenth = tenth
      init.logger.info({ task: init.label, done, total, percent: tenth * 10 }, 'progress')
    },
    finish() {
      init.logger.info({ task: init.label, total, seconds: (Date.now() - started) / 1000 }, 'done')
    }
  }
}
