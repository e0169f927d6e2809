import { mkdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { cacheRoot } from '../binaries/cache-dir.ts'
import { createProgress } from '../progress.ts'
import { generateLlamaModel, modelId, type LlamaModelSpec } from './llama-model.ts'

export interface EnsureModelOptions {
  readonly logger: Logger
  /** Folder for generated models; `<cache>/models` by default. */
  readonly dir?: string | undefined
}

/** Path of the generated model for `spec`, generating it first when it is not there yet. */
export async function ensureModel(spec: LlamaModelSpec, options: EnsureModelOptions): Promise<string> {
  const dir = options.dir ?? join(cacheRoot(), 'models')
  const path = join(dir, `${modelId(spec)}.gguf`)
  if (await exists(path)) return path
  await mkdir(dir, { recursive: true })
  const progress = createProgress({
    logger: options.logger,
    label: `model ${spec.name}`,
    total: 1,
    unit: 'bytes'
  })
  const bytes = await generateLlamaModel(path, spec, {
    onProgress: (done, total) => progress.update(done, total)
  })
  progress.finish()
  options.logger.info({ path, bytes, model: spec.name }, 'model generated')
  return path
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() === true
}
