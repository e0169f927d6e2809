import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { promisify } from 'node:util'
import type { Logger } from 'pino'
import { LLAMA_SOURCE } from '../constants.ts'
import { BinaryError } from '../errors.ts'
import { createProgress } from '../progress.ts'
import { cacheRoot } from './cache-dir.ts'

const run = promisify(execFile)

export interface SourceOptions {
  readonly logger: Logger
  readonly env?: NodeJS.ProcessEnv | undefined
  readonly signal?: AbortSignal | undefined
}

/** The node-llama-cpp tarball, downloaded once into our cache and checked against its pinned integrity. */
export async function fetchSourceTarball(options: SourceOptions): Promise<string> {
  const env = options.env ?? process.env
  const dir = join(cacheRoot(env), 'sources')
  const file = join(dir, `${LLAMA_SOURCE.package}-${LLAMA_SOURCE.version}.tgz`)
  if (await hasIntegrity(file)) return file
  await mkdir(dir, { recursive: true })
  const registry = (env['npm_config_registry'] ?? 'https://registry.npmjs.org/').replace(/\/?$/, '/')
  const url = `${registry}${LLAMA_SOURCE.package}/-/${LLAMA_SOURCE.package}-${LLAMA_SOURCE.version}.tgz`
  const partial = `${file}.partial-${process.pid}`
  options.logger.info({ url }, 'downloading llama.cpp source')
  try {
    const res = await fetch(url, options.signal === undefined ? {} : { signal: options.signal })
    if (!res.ok || res.body === null)
      throw new BinaryError('ERR_SOURCE_DOWNLOAD', `GET ${url}: HTTP ${res.status}`)
    const total = Number(res.headers.get('content-length') ?? 0)
    const progress = createProgress({
      logger: options.logger,
      label: 'llama.cpp source',
      total,
      unit: 'bytes'
    })
    let done = 0
    const body = Readable.fromWeb(res.body)
    body.on('data', (chunk: Buffer) => progress.update((done += chunk.length)))
    await pipeline(body, createWriteStream(partial))
    progress.finish()
    if (!(await hasIntegrity(partial))) {
      throw new BinaryError('ERR_SOURCE_INTEGRITY', `${url} does not match the pinned integrity`)
    }
    await rename(partial, file)
    return file
  } catch (err) {
    await rm(partial, { force: true })
    if (err instanceof BinaryError) throw err
    throw new BinaryError('ERR_SOURCE_DOWNLOAD', `could not download ${url}: ${(err as Error).message}`, {
      cause: err
    })
  }
}

/** Unpacks the llama.cpp git bundle from the tarball and checks out the pinned commit into `dest`. */
export async function checkoutSource(tarball: string, workDir: string, dest: string): Promise<void> {
  await mkdir(workDir, { recursive: true })
  await tool('tar', ['-xzf', tarball, '-C', workDir, LLAMA_SOURCE.bundlePath])
  const bundle = join(workDir, LLAMA_SOURCE.bundlePath)
  await tool('git', ['clone', '--quiet', bundle, dest])
  const { stdout } = await tool('git', ['-C', dest, 'rev-parse', 'HEAD'])
  if (stdout.trim() !== LLAMA_SOURCE.commit) {
    throw new BinaryError(
      'ERR_SOURCE_COMMIT',
      `bundle holds ${stdout.trim()}, expected ${LLAMA_SOURCE.commit}`
    )
  }
  await rm(join(workDir, 'package'), { recursive: true, force: true })
}

/** The RPC protocol version a llama.cpp source tree speaks, from ggml-rpc.h. */
export async function sourceRpcProtocol(sourceDir: string): Promise<string> {
  const header = await readFile(join(sourceDir, 'ggml', 'include', 'ggml-rpc.h'), 'utf8')
  const part = (name: string): string => {
    const match = new RegExp(`#define\\s+RPC_PROTO_${name}_VERSION\\s+(\\d+)`).exec(header)
    if (match?.[1] === undefined)
      throw new BinaryError('ERR_SOURCE_LAYOUT', `ggml-rpc.h has no RPC_PROTO_${name}_VERSION`)
    return match[1]
  }
  return `${part('MAJOR')}.${part('MINOR')}.${part('PATCH')}`
}

async function hasIntegrity(file: string): Promise<boolean> {
  try {
    const digest = createHash('sha512')
      .update(await readFile(file))
      .digest('base64')
    return `sha512-${digest}` === LLAMA_SOURCE.integrity
  } catch {
    return false
  }
}

async function tool(command: string, args: string[]): Promise<{ stdout: string }> {
  try {
    return await run(command, args, { maxBuffer: 16 * 1024 * 1024 })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const detail =
      code === 'ENOENT' ? `${command} is not installed` : ((err as { stderr?: string }).stderr ?? String(err))
    throw new BinaryError('ERR_BUILD_TOOL', `${command} ${args[0] ?? ''} failed: ${detail.trim()}`, {
      cause: err
    })
  }
}
