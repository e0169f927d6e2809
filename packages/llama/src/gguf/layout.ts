import { GgufError } from '../errors.ts'
import type { GgufInfo } from './reader.ts'

/** What placement needs to know of a model: bytes per layer, and what each token adds to the KV cache. */
export interface ModelLayout {
  readonly architecture: string
  readonly layerCount: number
  /** Bytes of `blk.<i>.*` tensors, by layer. */
  readonly layerBytes: readonly number[]
  /** Token embeddings: llama.cpp keeps them on the host, never on an RPC device. */
  readonly inputBytes: number
  /** Output norm and projection: placed with the last device. */
  readonly outputBytes: number
  readonly totalBytes: number
  /** K and V cache per token per layer at F16 (llama.cpp's default cache type). */
  readonly kvBytesPerTokenPerLayer: number
}

const INPUT_TENSORS = /^(token_embd|token_types|position_embd)\./

export function modelLayout(info: GgufInfo): ModelLayout {
  const architecture = stringKey(info, 'general.architecture')
  const layerCount = numberKey(info, `${architecture}.block_count`)
  const layerBytes = new Array<number>(layerCount).fill(0)
  let inputBytes = 0
  let outputBytes = 0
  for (const tensor of info.tensors) {
    const block = /^blk\.(\d+)\./.exec(tensor.name)
    if (block !== null) {
      const layer = Number(block[1])
      if (layer >= layerCount)
        throw new GgufError('ERR_GGUF_LAYOUT', `${tensor.name} is past block_count ${layerCount}`)
      layerBytes[layer] = (layerBytes[layer] as number) + tensor.size
    } else if (INPUT_TENSORS.test(tensor.name)) {
      inputBytes += tensor.size
    } else {
      outputBytes += tensor.size
    }
  }
  const embedding = numberKey(info, `${architecture}.embedding_length`)
  const heads = numberKey(info, `${architecture}.attention.head_count`)
  const kvHeads = optionalNumber(info, `${architecture}.attention.head_count_kv`) ?? heads
  return {
    architecture,
    layerCount,
    layerBytes,
    inputBytes,
    outputBytes,
    totalBytes: inputBytes + outputBytes + layerBytes.reduce((a, b) => a + b, 0),
    kvBytesPerTokenPerLayer: 2 * (embedding / heads) * kvHeads * 2
  }
}

function stringKey(info: GgufInfo, key: string): string {
  const value = info.metadata.get(key)
  if (typeof value !== 'string') throw new GgufError('ERR_GGUF_METADATA', `missing or non-string ${key}`)
  return value
}

function numberKey(info: GgufInfo, key: string): number {
  const value = optionalNumber(info, key)
  if (value === undefined) throw new GgufError('ERR_GGUF_METADATA', `missing or non-numeric ${key}`)
  return value
}

function optionalNumber(info: GgufInfo, key: string): number | undefined {
  const value = info.metadata.get(key)
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new GgufError('ERR_GGUF_METADATA', `${key} must be a positive integer`)
  }
  return value
}
