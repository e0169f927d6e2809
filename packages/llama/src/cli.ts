#!/usr/bin/env node
import { Command, Option } from 'commander'
import { detectBackend, parseBackend } from './binaries/backend.ts'
import { buildBinaries } from './binaries/build.ts'
import { ensureBinaries, ensureRpcServer } from './binaries/ensure.ts'
import { LlamaError } from './errors.ts'
import { ensureModel } from './gguf/model-cache.ts'
import { LARGE_MODEL, TINY_MODEL } from './gguf/llama-model.ts'
import { createLogger } from './logger.ts'
import { startRpcServer } from './process/rpc-server.ts'

const logger = createLogger({ name: 'fm-llama' })
const backendOption = new Option('--backend <backend>', 'cpu, cuda or metal (default: detected)').argParser(
  parseBackend
)

interface EnsureFlags {
  backend?: ReturnType<typeof parseBackend>
  build: boolean
  check?: boolean
  rpcServerOnly?: boolean
}

const program = new Command('fm-llama')
  .description('llama.cpp binaries and generated test models for Frankenstein Mesh')
  .showHelpAfterError()

program
  .command('ensure')
  .description(
    'find ggml-rpc-server and llama-server (flags, env, PATH, cache), building them if absent; print their paths as JSON'
  )
  .addOption(backendOption)
  .option('--no-build', 'fail instead of building when none are found')
  .option('--check', 'start the rpc-server once and report the RPC protocol it speaks')
  .option(
    '--rpc-server-only',
    'only ggml-rpc-server, all a worker runs (built alone when absent: a few minutes instead of ~10)'
  )
  .action(async (opts: EnsureFlags) => {
    const options = { logger, backend: opts.backend, build: opts.build }
    const bins = opts.rpcServerOnly === true ? await ensureRpcServer(options) : await ensureBinaries(options)
    let rpcProtocol = bins.build?.rpcProtocol
    if (opts.check === true) {
      const server = await startRpcServer({ binary: bins.rpcServer, logger })
      const v = server.version
      rpcProtocol = `${v.major}.${v.minor}.${v.patch}`
      await server.stop()
    }
    process.stdout.write(`${JSON.stringify({ ...bins, rpcProtocol }, null, 2)}\n`)
  })

program
  .command('backend')
  .description(
    'print the backend a build here would use: metal on macOS, cuda with nvcc and a GPU, cpu otherwise'
  )
  .action(() => {
    process.stdout.write(`${detectBackend()}\n`)
  })

program
  .command('build')
  .description('build ggml-rpc-server and llama-server from the pinned llama.cpp source into the cache')
  .addOption(backendOption)
  .action(async (opts: { backend?: ReturnType<typeof parseBackend> }) => {
    const bins = await buildBinaries({ logger, backend: opts.backend ?? detectBackend() })
    process.stdout.write(`${JSON.stringify(bins, null, 2)}\n`)
  })

program
  .command('model')
  .description('generate (once, into the cache) a random-weight llama model and print its path')
  .addOption(new Option('--size <size>', 'which model').choices(['tiny', 'large']).default('tiny'))
  .option('--dir <dir>', 'folder to keep generated models in (default: the cache)')
  .action(async (opts: { size: 'tiny' | 'large'; dir?: string }) => {
    const path = await ensureModel(opts.size === 'large' ? LARGE_MODEL : TINY_MODEL, {
      logger,
      dir: opts.dir
    })
    process.stdout.write(`${path}\n`)
  })

try {
  await program.parseAsync()
} catch (err) {
  if (err instanceof LlamaError) {
    process.stderr.write(`fm-llama: ${err.message} [${err.code}]\n`)
    process.exitCode = 2
  } else {
    throw err
  }
}
