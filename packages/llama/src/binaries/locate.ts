import { accessSync, constants, statSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { BINARY_NAMES } from '../constants.ts'
import { BinaryError } from '../errors.ts'
import type { LlamaBackend } from './backend.ts'
import { buildDir, readBuildInfo, rpcServerBuildDir, type BuildInfo } from './build-info.ts'

export type BinarySource = 'flag' | 'env' | 'path' | 'cache'

export interface LlamaBinaries {
  readonly rpcServer: string
  readonly llamaServer: string
  readonly source: BinarySource
  /** Known for binaries we built; for others, ask the rpc-server (HELLO) for its protocol. */
  readonly build?: BuildInfo | undefined
}

export interface LocateOptions {
  /** Explicit paths, e.g. from `--rpc-server-bin`; they win over everything else. */
  readonly rpcServer?: string | undefined
  readonly llamaServer?: string | undefined
  readonly backend: LlamaBackend
  readonly env?: NodeJS.ProcessEnv | undefined
}

export const BINARY_ENV = { rpcServer: 'FM_RPC_SERVER', llamaServer: 'FM_LLAMA_SERVER' } as const

/**
 * Finds ggml-rpc-server and llama-server: explicit paths, then FM_RPC_SERVER / FM_LLAMA_SERVER,
 * then PATH, then our cache. Returns undefined when they have to be built.
 */
export async function locateBinaries(options: LocateOptions): Promise<LlamaBinaries | undefined> {
  const env = options.env ?? process.env
  if (options.rpcServer !== undefined || options.llamaServer !== undefined) {
    return {
      rpcServer: executable(options.rpcServer ?? onPath(BINARY_NAMES.rpcServer, env), 'rpc-server'),
      llamaServer: executable(options.llamaServer ?? onPath(BINARY_NAMES.llamaServer, env), 'llama-server'),
      source: 'flag'
    }
  }
  const fromEnv = { rpcServer: env[BINARY_ENV.rpcServer], llamaServer: env[BINARY_ENV.llamaServer] }
  if (fromEnv.rpcServer !== undefined && fromEnv.llamaServer !== undefined) {
    return {
      rpcServer: executable(fromEnv.rpcServer, BINARY_ENV.rpcServer),
      llamaServer: executable(fromEnv.llamaServer, BINARY_ENV.llamaServer),
      source: 'env'
    }
  }
  const rpcOnPath = onPath(BINARY_NAMES.rpcServer, env)
  const llamaOnPath = onPath(BINARY_NAMES.llamaServer, env)
  if (rpcOnPath !== undefined && llamaOnPath !== undefined) {
    return { rpcServer: rpcOnPath, llamaServer: llamaOnPath, source: 'path' }
  }
  return await inCache(options.backend, env)
}

/** ggml-rpc-server alone, which is all a worker runs. */
export interface RpcServerBinary {
  readonly rpcServer: string
  readonly source: BinarySource
  readonly build?: BuildInfo | undefined
}

/**
 * Finds ggml-rpc-server: an explicit path, FM_RPC_SERVER, PATH, a full build in our cache, then a
 * build of it alone. Returns undefined when it has to be built.
 */
export async function locateRpcServer(options: LocateOptions): Promise<RpcServerBinary | undefined> {
  const env = options.env ?? process.env
  if (options.rpcServer !== undefined)
    return { rpcServer: executable(options.rpcServer, 'rpc-server'), source: 'flag' }
  const fromEnv = env[BINARY_ENV.rpcServer]
  if (fromEnv !== undefined) return { rpcServer: executable(fromEnv, BINARY_ENV.rpcServer), source: 'env' }
  const onPathBinary = onPath(BINARY_NAMES.rpcServer, env)
  if (onPathBinary !== undefined) return { rpcServer: onPathBinary, source: 'path' }
  return (await inCache(options.backend, env)) ?? (await rpcServerInCache(options.backend, env))
}

export async function rpcServerInCache(
  backend: LlamaBackend,
  env: NodeJS.ProcessEnv
): Promise<RpcServerBinary | undefined> {
  const dir = rpcServerBuildDir(backend, env)
  const build = await readBuildInfo(dir)
  const rpcServer = join(dir, 'bin', BINARY_NAMES.rpcServer)
  if (build === undefined || !isExecutable(rpcServer)) return undefined
  return { rpcServer, source: 'cache', build }
}

export async function inCache(
  backend: LlamaBackend,
  env: NodeJS.ProcessEnv
): Promise<LlamaBinaries | undefined> {
  const dir = buildDir(backend, env)
  const build = await readBuildInfo(dir)
  if (build === undefined) return undefined
  const rpcServer = join(dir, 'bin', BINARY_NAMES.rpcServer)
  const llamaServer = join(dir, 'bin', BINARY_NAMES.llamaServer)
  if (!isExecutable(rpcServer) || !isExecutable(llamaServer)) return undefined
  return { rpcServer, llamaServer, source: 'cache', build }
}

function onPath(name: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env['PATH'] ?? '').split(delimiter)) {
    if (dir !== '' && isExecutable(join(dir, name))) return join(dir, name)
  }
  return undefined
}

function executable(path: string | undefined, what: string): string {
  if (path === undefined)
    throw new BinaryError('ERR_BINARY_NOT_FOUND', `${what}: no binary given and none on PATH`)
  if (!isExecutable(path))
    throw new BinaryError('ERR_BINARY_NOT_FOUND', `${what}: ${path} is not an executable file`)
  return path
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return statSync(path).isFile()
  } catch {
    return false
  }
}
