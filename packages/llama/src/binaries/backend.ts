import { execFileSync } from 'node:child_process'
import { BinaryError } from '../errors.ts'

/** Which ggml backend the binaries are built for. */
export type LlamaBackend = 'cpu' | 'cuda' | 'metal'

const BACKENDS: readonly LlamaBackend[] = ['cpu', 'cuda', 'metal']

export function parseBackend(value: string): LlamaBackend {
  if ((BACKENDS as readonly string[]).includes(value)) return value as LlamaBackend
  throw new BinaryError(
    'ERR_BAD_BACKEND',
    `unknown backend "${value}", expected one of ${BACKENDS.join(', ')}`
  )
}

/**
 * Metal on macOS; CUDA where nvcc exists *and* nvidia-smi lists a GPU (a toolkit without a GPU
 * would only make the build slow and the binaries useless); CPU otherwise.
 */
export function detectBackend(): LlamaBackend {
  if (process.platform === 'darwin') return 'metal'
  if (commandSucceeds('nvcc', ['--version']) && /^GPU \d+:/m.test(output('nvidia-smi', ['-L']))) return 'cuda'
  return 'cpu'
}

export function cmakeFlags(backend: LlamaBackend): string[] {
  const common = [
    '-DCMAKE_BUILD_TYPE=Release',
    '-DBUILD_SHARED_LIBS=OFF',
    '-DGGML_RPC=ON',
    '-DGGML_NATIVE=ON',
    '-DLLAMA_CURL=OFF',
    '-DLLAMA_OPENSSL=OFF',
    '-DLLAMA_USE_PREBUILT_UI=OFF',
    '-DLLAMA_BUILD_TESTS=OFF',
    '-DLLAMA_BUILD_EXAMPLES=OFF'
  ]
  if (backend === 'cuda') return [...common, '-DGGML_CUDA=ON']
  if (backend === 'metal') return [...common, '-DGGML_METAL=ON']
  return common
}

/** True when the command runs and exits 0 (within 10 s). */
export function commandSucceeds(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore', timeout: 10_000 })
    return true
  } catch {
    return false
  }
}

function output(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000
    })
  } catch {
    return ''
  }
}
