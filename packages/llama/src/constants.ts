/**
 * The llama.cpp we build: the source that node-llama-cpp ships as `llama/gitRelease.bundle`,
 * pinned by package version, tarball integrity and the bundle's commit.
 */
export const LLAMA_SOURCE = {
  package: 'node-llama-cpp',
  version: '3.21.1',
  integrity:
    'sha512-E3N0Ev2Va0wzydvXYFwM9Hvyo07PoWjt8T/9GMc43Cvt8YkV/NU/tYUgEMC1grTPv2o9PRjQi0G3Wb5P/awiMg==',
  bundlePath: 'package/llama/gitRelease.bundle',
  commit: '80fb11ac73e66d89eae2c6a91d8a77428fa733ed'
} as const

export const BINARY_NAMES = {
  rpcServer: 'ggml-rpc-server',
  llamaServer: 'llama-server'
} as const
