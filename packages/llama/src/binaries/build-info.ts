import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { LLAMA_SOURCE } from '../constants.ts'
import type { LlamaBackend } from './backend.ts'
import { cacheRoot } from './cache-dir.ts'

export const BuildInfoSchema = z.object({
  commit: z.string().regex(/^[0-9a-f]{40}$/),
  rpcProtocol: z.string().regex(/^\d+\.\d+\.\d+$/),
  backend: z.enum(['cpu', 'cuda', 'metal']),
  cmakeFlags: z.array(z.string()),
  source: z.string(),
  builtAt: z.string()
})

export type BuildInfo = z.infer<typeof BuildInfoSchema>

export const BUILD_INFO_FILE = 'build-info.json'

/** `<cache>/llama-<commit>-<backend>`: one finished build, complete or absent, never partial. */
export function buildDir(backend: LlamaBackend, env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheRoot(env), `llama-${LLAMA_SOURCE.commit.slice(0, 12)}-${backend}`)
}

/** `<cache>/llama-<commit>-<backend>-rpc-server`: a build of ggml-rpc-server alone (for workers). */
export function rpcServerBuildDir(backend: LlamaBackend, env: NodeJS.ProcessEnv = process.env): string {
  return `${buildDir(backend, env)}-rpc-server`
}

/** The build-info of a finished build, or undefined when there is none (or it is unreadable). */
export async function readBuildInfo(dir: string): Promise<BuildInfo | undefined> {
  try {
    const parsed = BuildInfoSchema.safeParse(JSON.parse(await readFile(join(dir, BUILD_INFO_FILE), 'utf8')))
    return parsed.success ? parsed.data : undefined
  } catch {
    return undefined
  }
}
