import type { Logger } from 'pino'
import { BinaryError } from '../errors.ts'
import { detectBackend, type LlamaBackend } from './backend.ts'
import { buildBinaries, buildRpcServer } from './build.ts'
import { locateBinaries, locateRpcServer, type LlamaBinaries, type RpcServerBinary } from './locate.ts'

export interface EnsureBinariesOptions {
  readonly logger: Logger
  readonly rpcServer?: string | undefined
  readonly llamaServer?: string | undefined
  /** Detected when absent: Metal on macOS, CUDA with a GPU, CPU otherwise. */
  readonly backend?: LlamaBackend | undefined
  /** Build when nothing is found (default). False: fail with a clear error instead. */
  readonly build?: boolean | undefined
  readonly env?: NodeJS.ProcessEnv | undefined
  readonly signal?: AbortSignal | undefined
}

/** Locates the llama.cpp binaries, building them into the cache when none are found. */
export async function ensureBinaries(options: EnsureBinariesOptions): Promise<LlamaBinaries> {
  const backend = options.backend ?? detectBackend()
  const env = options.env ?? process.env
  const found = await locateBinaries({
    backend,
    env,
    rpcServer: options.rpcServer,
    llamaServer: options.llamaServer
  })
  if (found !== undefined) {
    options.logger.debug({ ...found }, 'llama.cpp binaries found')
    return found
  }
  if (options.build === false) {
    throw new BinaryError(
      'ERR_BINARY_NOT_FOUND',
      'no ggml-rpc-server/llama-server found (flags, FM_RPC_SERVER/FM_LLAMA_SERVER, PATH, cache); run `fm-llama build`'
    )
  }
  options.logger.info(
    { backend },
    'llama.cpp binaries not found, building them (about 12 minutes on 2 cores)'
  )
  return await buildBinaries({
    backend,
    logger: options.logger,
    env,
    signal: options.signal
  })
}

/** Locates ggml-rpc-server alone (all a worker runs), building only it when none is found. */
export async function ensureRpcServer(options: EnsureBinariesOptions): Promise<RpcServerBinary> {
  const backend = options.backend ?? detectBackend()
  const env = options.env ?? process.env
  const found = await locateRpcServer({ backend, env, rpcServer: options.rpcServer })
  if (found !== undefined) return found
  if (options.build === false) {
    throw new BinaryError(
      'ERR_BINARY_NOT_FOUND',
      'no ggml-rpc-server found (flags, FM_RPC_SERVER, PATH, cache); run `fm-llama ensure --rpc-server-only`'
    )
  }
  options.logger.info({ backend }, 'ggml-rpc-server not found, building it alone')
  return await buildRpcServer({ backend, logger: options.logger, env, signal: options.signal })
}
