import { availableParallelism } from 'node:os'
import { copyFile, mkdir, readdir, rm, rename, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { Logger } from 'pino'
import { BINARY_NAMES, LLAMA_SOURCE } from '../constants.ts'
import { BinaryError } from '../errors.ts'
import { describeExit, startProcess } from '../process/managed-process.ts'
import { createProgress } from '../progress.ts'
import { cmakeFlags, commandSucceeds, type LlamaBackend } from './backend.ts'
import { BUILD_INFO_FILE, buildDir, rpcServerBuildDir, type BuildInfo } from './build-info.ts'
import { pidAlive, withBuildLock } from './build-lock.ts'
import { inCache, rpcServerInCache, type LlamaBinaries, type RpcServerBinary } from './locate.ts'
import { checkoutSource, fetchSourceTarball, sourceRpcProtocol } from './source.ts'

export interface BuildOptions {
  readonly backend: LlamaBackend
  readonly logger: Logger
  readonly env?: NodeJS.ProcessEnv | undefined
  readonly jobs?: number | undefined
  readonly signal?: AbortSignal | undefined
}

const TARGETS = [BINARY_NAMES.rpcServer, BINARY_NAMES.llamaServer]

/**
 * Builds ggml-rpc-server and llama-server from the pinned llama.cpp source into our cache, once
 * per commit and backend.
 */
export async function buildBinaries(options: BuildOptions): Promise<LlamaBinaries> {
  const env = options.env ?? process.env
  return await buildOnce(buildDir(options.backend, env), TARGETS, options, () =>
    inCache(options.backend, env)
  )
}

/** Builds ggml-rpc-server alone (a worker needs nothing else): a fraction of the full build. */
export async function buildRpcServer(options: BuildOptions): Promise<RpcServerBinary> {
  const env = options.env ?? process.env
  return await buildOnce(rpcServerBuildDir(options.backend, env), [BINARY_NAMES.rpcServer], options, () =>
    rpcServerInCache(options.backend, env)
  )
}

/**
 * Builds `targets` into `final` unless `find` already finds them there. The build happens in a
 * `.tmp-<pid>` folder renamed into place at the end, under a lock, so a killed build leaves no
 * half cache (its leftovers are removed by the next build).
 */
async function buildOnce<T>(
  final: string,
  targets: readonly string[],
  options: BuildOptions,
  find: () => Promise<T | undefined>
): Promise<T> {
  return await withBuildLock(`${final}.lock`, options.logger, async () => {
    const cached = await find()
    if (cached !== undefined) return cached
    await removeStaleTemps(final)
    const tmp = `${final}.tmp-${process.pid}`
    try {
      const build = await buildInto(tmp, targets, options)
      await rm(final, { recursive: true, force: true })
      await rename(join(tmp, 'out'), final)
      options.logger.info({ dir: final, ...build }, 'llama.cpp binaries built')
    } finally {
      await rm(tmp, { recursive: true, force: true })
    }
    const built = await find()
    if (built === undefined)
      throw new BinaryError('ERR_BUILD_FAILED', `build finished but ${final} is incomplete`)
    return built
  })
}

async function buildInto(tmp: string, targets: readonly string[], options: BuildOptions): Promise<BuildInfo> {
  const src = join(tmp, 'src')
  const build = join(tmp, 'build')
  const tarball = await fetchSourceTarball(options)
  await checkoutSource(tarball, tmp, src)
  const flags = cmakeFlags(options.backend)
  const generator = commandSucceeds('ninja', ['--version']) ? ['-G', 'Ninja'] : []
  options.logger.info(
    { backend: options.backend, flags, targets, commit: LLAMA_SOURCE.commit },
    'configuring llama.cpp'
  )
  await cmake(['-S', src, '-B', build, ...generator, ...flags], 'llama.cpp configure', options)
  const jobs = String(options.jobs ?? availableParallelism())
  await cmake(['--build', build, '--target', ...targets, '-j', jobs], 'llama.cpp build', options)
  const out = join(tmp, 'out', 'bin')
  await mkdir(out, { recursive: true })
  for (const target of targets) await copyFile(join(build, 'bin', target), join(out, target))
  const info: BuildInfo = {
    commit: LLAMA_SOURCE.commit,
    rpcProtocol: await sourceRpcProtocol(src),
    backend: options.backend,
    cmakeFlags: flags,
    source: `${LLAMA_SOURCE.package}@${LLAMA_SOURCE.version}`,
    builtAt: new Date().toISOString()
  }
  await writeFile(join(tmp, 'out', BUILD_INFO_FILE), `${JSON.stringify(info, null, 2)}\n`)
  return info
}

/** Runs cmake, turning ninja's `[n/m]` or make's `[ nn%]` lines into progress. */
async function cmake(args: string[], label: string, options: BuildOptions): Promise<void> {
  const progress = createProgress({ logger: options.logger, label, total: 100 })
  const proc = startProcess({
    name: 'cmake',
    command: 'cmake',
    args,
    logger: options.logger,
    tailLines: 30,
    onLine: (line) => {
      const steps = /^\[(\d+)\/(\d+)\]/.exec(line)
      if (steps !== null) progress.update(Number(steps[1]), Number(steps[2]))
      const percent = /^\[\s*(\d+)%\]/.exec(line)
      if (percent !== null) progress.update(Number(percent[1]), 100)
    }
  })
  const onAbort = (): void => void proc.stop()
  options.signal?.addEventListener('abort', onAbort, { once: true })
  const exit = await proc.exited.finally(() => options.signal?.removeEventListener('abort', onAbort))
  if (exit.code !== 0 || exit.spawnError !== undefined) {
    const missing = exit.spawnError !== undefined ? ' (is cmake installed?)' : ''
    throw new BinaryError(
      'ERR_BUILD_FAILED',
      `${label} ${describeExit(exit)}${missing}:\n${exit.tail.slice(-15).join('\n')}`,
      { cause: exit.spawnError }
    )
  }
  progress.finish()
}

/** Builds killed before they finished leave `<final>.tmp-<pid>`; remove those of dead pids. */
async function removeStaleTemps(final: string): Promise<void> {
  const prefix = `${basename(final)}.tmp-`
  const entries = await readdir(dirname(final)).catch(() => [] as string[])
  for (const entry of entries) {
    if (!entry.startsWith(prefix)) continue
    const pid = Number(entry.slice(prefix.length))
    if (!Number.isInteger(pid) || !pidAlive(pid))
      await rm(join(dirname(final), entry), { recursive: true, force: true })
  }
}
