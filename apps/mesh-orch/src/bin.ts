#!/usr/bin/env node
// The entry point: the one place where errors become exit statuses.
import { tuneGcForBulkTraffic } from '@frankenstein-mesh/mesh'
import { buildProgram } from './cli.ts'

tuneGcForBulkTraffic()

const controller = new AbortController()
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => controller.abort())

try {
  await buildProgram(controller.signal).parseAsync()
} catch (err) {
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && code.startsWith('ERR_')) {
    process.stderr.write(`mesh-orch: ${(err as Error).message} [${code}]\n`)
    process.exitCode = 2
  } else {
    process.stderr.write(`mesh-orch: internal error\n${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
}
