import { createHash } from 'node:crypto'
import { GgufError } from '../errors.ts'
import { GgmlType, type GgufTypedValue } from './types.ts'
import { asciiVocab } from './vocab.ts'
import { writeGguf, type GgufSpec, type GgufTensorSpec, type WriteGgufOptions } from './writer.ts'

/** Shape of a generated llama-architecture model with random weights. */
export interface LlamaModelSpec {
  readonly name: string
  readonly layers: number
  readonly embedding: number
  readonly feedForward: number
  readonly heads: number
  readonly kvHeads: number
  readonly contextLength: number
  /** Storage of the 2-D weight matrices; norms are always F32. */
  readonly weightType: 'f32' | 'f16'
  readonly seed: number
}

/** ~19 MB, 6 layers: fast enough for every end-to-end test. */
export const TINY_MODEL: LlamaModelSpec = {
  name: 'tiny',
  layers: 6,
  embedding: 256,
  feedForward: 768,
  heads: 8,
  kvHeads: 4,
  contextLength: 4096,
  weightType: 'f32',
  seed: 1
}

/** ~1.5 GB F16, 17 layers: the "large" model of the benches, where bulk transfer dominates. */
export const LARGE_MODEL: LlamaModelSpec = {
  name: 'large',
  layers: 17,
  embedding: 2048,
  feedForward: 5632,
  heads: 32,
  kvHeads: 8,
  contextLength: 4096,
  weightType: 'f16',
  seed: 2
}

/** Stable id of a spec: models are cached under it, and regenerated when the spec changes. */
export function modelId(spec: LlamaModelSpec): string {
  return `${spec.name}-${createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 12)}`
}

export function llamaModelGguf(spec: LlamaModelSpec): GgufSpec {
  validate(spec)
  const vocab = asciiVocab()
  const { embedding: e, feedForward: ff } = spec
  const kv = (e / spec.heads) * spec.kvHeads
  const weight = spec.weightType === 'f16' ? GgmlType.F16 : GgmlType.F32
  const tensors: GgufTensorSpec[] = [
    randomTensor(spec, 'token_embd.weight', [e, vocab.tokens.length], weight),
    onesTensor('output_norm.weight', [e]),
    // Zero logits for the tokens that render as nothing, so greedy text is visible, and for EOS,
    // so generations run to their length.
    randomTensor(spec, 'output.weight', [e, vocab.tokens.length], weight, vocab.silent)
  ]
  for (let i = 0; i < spec.layers; i++) {
    const blk = `blk.${i}`
    tensors.push(
      onesTensor(`${blk}.attn_norm.weight`, [e]),
      randomTensor(spec, `${blk}.attn_q.weight`, [e, e], weight),
      randomTensor(spec, `${blk}.attn_k.weight`, [e, kv], weight),
      randomTensor(spec, `${blk}.attn_v.weight`, [e, kv], weight),
      randomTensor(spec, `${blk}.attn_output.weight`, [e, e], weight),
      onesTensor(`${blk}.ffn_norm.weight`, [e]),
      randomTensor(spec, `${blk}.ffn_gate.weight`, [e, ff], weight),
      randomTensor(spec, `${blk}.ffn_up.weight`, [e, ff], weight),
      randomTensor(spec, `${blk}.ffn_down.weight`, [ff, e], weight)
    )
  }
  const u32 = (value: number): GgufTypedValue => ({ type: 'u32', value })
  return {
    metadata: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['general.name', { type: 'string', value: `frankenstein-${modelId(spec)}` }],
      ['llama.context_length', u32(spec.contextLength)],
      ['llama.embedding_length', u32(e)],
      ['llama.block_count', u32(spec.layers)],
      ['llama.feed_forward_length', u32(ff)],
      ['llama.attention.head_count', u32(spec.heads)],
      ['llama.attention.head_count_kv', u32(spec.kvHeads)],
      ['llama.rope.dimension_count', u32(e / spec.heads)],
      ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 }],
      ['llama.vocab_size', u32(vocab.tokens.length)],
      ...vocab.metadata
    ],
    tensors
  }
}

/** Writes the model; the same spec always gives the same bytes. */
export async function generateLlamaModel(
  path: string,
  spec: LlamaModelSpec,
  options?: WriteGgufOptions
): Promise<number> {
  return await writeGguf(path, llamaModelGguf(spec), options)
}

function validate(spec: LlamaModelSpec): void {
  const positive = [
    spec.layers,
    spec.embedding,
    spec.feedForward,
    spec.heads,
    spec.kvHeads,
    spec.contextLength
  ]
  if (!positive.every((n) => Number.isInteger(n) && n > 0)) {
    throw new GgufError('ERR_MODEL_SPEC', 'model dimensions must be positive integers')
  }
  if (
    spec.embedding % spec.heads !== 0 ||
    spec.heads % spec.kvHeads !== 0 ||
    (spec.embedding / spec.heads) % 2 !== 0
  ) {
    throw new GgufError(
      'ERR_MODEL_SPEC',
      'embedding must split into even-sized heads, and heads into kv groups'
    )
  }
}

function onesTensor(name: string, dims: number[]): GgufTensorSpec {
  return {
    name,
    dims,
    type: GgmlType.F32,
    fill: (piece) => new Float32Array(piece.buffer, piece.byteOffset, piece.length / 4).fill(1)
  }
}

/** Uniform weights in ±1/sqrt(fan-in), from a generator seeded by the model seed and tensor name. */
function randomTensor(
  spec: LlamaModelSpec,
  name: string,
  dims: number[],
  type: number,
  zeroRows: ReadonlySet<number> = new Set()
): GgufTensorSpec {
  const rowLength = dims[0] as number
  const scale = 1 / Math.sqrt(rowLength)
  const rowBytes = rowLength * (type === GgmlType.F32 ? 4 : 2)
  let next: () => number = () => 0
  return {
    name,
    dims,
    type,
    fill: (piece, offset) => {
      if (offset === 0) next = xorshift32(seedOf(spec.seed, name))
      if (type === GgmlType.F32) {
        const floats = new Float32Array(piece.buffer, piece.byteOffset, piece.length / 4)
        for (let i = 0; i < floats.length; i++) floats[i] = ((next() / 0x1_0000_0000) * 2 - 1) * scale
      } else {
        fillF16(new Uint16Array(piece.buffer, piece.byteOffset, piece.length / 2), next, scale)
      }
      for (const row of zeroRows) {
        const start = row * rowBytes - offset
        if (start + rowBytes > 0 && start < piece.length)
          piece.fill(0, Math.max(0, start), Math.min(piece.length, start + rowBytes))
      }
    }
  }
}

/** F16 values come from a 4096-entry table of the distribution: fast for 750 M weights. */
function fillF16(halves: Uint16Array, next: () => number, scale: number): void {
  const table = f16Table(scale)
  for (let i = 0; i + 1 < halves.length; i += 2) {
    const r = next()
    halves[i] = table[r & 0xfff] as number
    halves[i + 1] = table[(r >>> 12) & 0xfff] as number
  }
  if (halves.length % 2 === 1) halves[halves.length - 1] = table[next() & 0xfff] as number
}

const f16Tables = new Map<number, Uint16Array>()

function f16Table(scale: number): Uint16Array {
  let table = f16Tables.get(scale)
  if (table === undefined) {
    table = new Uint16Array(4096)
    const view = new DataView(new ArrayBuffer(2))
    for (let i = 0; i < table.length; i++) {
      view.setFloat16(0, (((i + 0.5) / table.length) * 2 - 1) * scale, true)
      table[i] = view.getUint16(0, true)
    }
    f16Tables.set(scale, table)
  }
  return table
}

function seedOf(seed: number, name: string): number {
  const digest = createHash('sha256').update(`${seed}:${name}`).digest()
  return digest.readUInt32LE(0) || 1
}

function xorshift32(seed: number): () => number {
  let x = seed >>> 0
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>>= 0)
  }
}
