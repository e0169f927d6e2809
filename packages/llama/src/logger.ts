import { pino, type Logger } from 'pino'

export interface LoggerOptions {
  readonly name: string
  /** pino level; `FM_LOG_LEVEL` when absent, else `info`. */
  readonly level?: string | undefined
}

/** JSON logs to stderr (stdout is for what the user asked for), with secrets redacted. */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      name: options.name,
      level: options.level ?? process.env['FM_LOG_LEVEL'] ?? 'info',
      redact: {
        paths: ['*.secret', '*.privateKey', '*.apiKey', '*.token', 'secret', 'privateKey', 'apiKey'],
        censor: '[redacted]'
      }
    },
    pino.destination({ fd: 2, sync: true })
  )
}

/** A logger that drops everything, for unit tests and quiet callers. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
