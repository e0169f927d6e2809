import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import {
  GgmlType,
  GgufError,
  TINY_MODEL,
  generateLlamaModel,
  modelLayout,
  readGguf,
  tensorByteSize,
  writeGguf,
  type LlamaModelSpec
} from '../src/index.ts'

let dir: string
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-gguf-'))
})
after(async () => {
  await rm(dir, { recursive: true, force: true })
})

const small: LlamaModelSpec = {
  ...TINY_MODEL,
  name: 'unit',
  layers: 2,
  embedding: 64,
  feedForward: 128,
  heads: 4,
  kvHeads: 2
}

describe('writeGguf and readGguf', () => {
  it('read back every metadata type and tensor that was written', async () => {
    const path = join(dir, 'roundtrip.gguf')
    await writeGguf(path, {
      metadata: [
        ['general.architecture', { type: 'string', value: 'test' }],
        ['a.u8', { type: 'u8', value: 255 }],
        ['a.i16', { type: 'i16', value: -3 }],
        ['a.f32', { type: 'f32', value: 0.5 }],
        ['a.bool', { type: 'bool', value: true }],
        ['a.u64', { type: 'u64', value: 2n ** 60n }],
        ['a.i64', { type: 'i64', value: -5 }],
        ['a.f64', { type: 'f64', value: Math.PI }],
        ['a.strings', { type: 'array', itemType: 'string', value: ['x', 'yz', ''] }],
        ['a.i32s', { type: 'array', itemType: 'i32', value: [1, -2, 3] }]
      ],
      tensors: [
        { name: 'first', dims: [3, 2], type: GgmlType.F32, fill: (piece) => piece.fill(1) },
        { name: 'second', dims: [5], type: GgmlType.F16, fill: (piece) => piece.fill(2) }
      ]
    })
    const info = await readGguf(path)
    assert.deepEqual(Object.fromEntries(info.metadata), {
      'general.architecture': 'test',
      'a.u8': 255,
      'a.i16': -3,
      'a.f32': 0.5,
      'a.bool': true,
      'a.u64': 2n ** 60n,
      'a.i64': -5,
      'a.f64': Math.PI,
      'a.strings': ['x', 'yz', ''],
      'a.i32s': [1, -2, 3]
    })
    assert.deepEqual(
      info.tensors.map((t) => [t.name, t.dims, t.type, t.size, t.offset % 32]),
      [
        ['first', [3, 2], GgmlType.F32, 24, 0],
        ['second', [5], GgmlType.F16, 10, 0]
      ]
    )
    const bytes = await readFile(path)
    const second = info.tensors[1]
    assert.ok(second !== undefined)
    assert.deepEqual(bytes.subarray(second.offset, second.offset + second.size), Buffer.alloc(10, 2))
  })

  it('refuses a file that is not GGUF', async () => {
    const path = join(dir, 'not.gguf')
    await writeFile(path, 'hello world, not a model')
    await assert.rejects(readGguf(path), (err) => err instanceof GgufError && err.code === 'ERR_GGUF_MAGIC')
  })

  it('refuses a file cut inside its header', async () => {
    const path = join(dir, 'cut.gguf')
    await generateLlamaModel(path, small)
    await truncate(path, 2000)
    await assert.rejects(readGguf(path), { code: 'ERR_GGUF_TRUNCATED' })
  })

  it('refuses a file cut inside its tensor data', async () => {
    const path = join(dir, 'cut-data.gguf')
    await generateLlamaModel(path, small)
    const info = await readGguf(path)
    await truncate(path, info.fileSize - 10)
    await assert.rejects(readGguf(path), { code: 'ERR_GGUF_TENSOR_BOUNDS' })
  })

  it('refuses absurd counts before allocating for them', async () => {
    const path = join(dir, 'huge.gguf')
    const header = Buffer.alloc(24)
    header.writeUInt32LE(0x46554747, 0)
    header.writeUInt32LE(3, 4)
    header.writeBigUInt64LE(2n ** 63n, 8)
    await writeFile(path, header)
    await assert.rejects(readGguf(path), { code: 'ERR_GGUF_LIMIT' })
  })

  it('refuses a missing file with a clear error', async () => {
    await assert.rejects(readGguf(join(dir, 'absent.gguf')), { code: 'ERR_GGUF_OPEN' })
  })
})

describe('generateLlamaModel', () => {
  it('writes the same bytes for the same spec', async () => {
    const [a, b] = [join(dir, 'a.gguf'), join(dir, 'b.gguf')]
    await generateLlamaModel(a, small)
    await generateLlamaModel(b, small)
    const digest = async (p: string) =>
      createHash('sha256')
        .update(await readFile(p))
        .digest('hex')
    assert.equal(await digest(a), await digest(b))
    await generateLlamaModel(b, { ...small, seed: 99 })
    assert.notEqual(await digest(a), await digest(b))
  })

  it('lays out a llama model that modelLayout understands', async () => {
    const path = join(dir, 'layout.gguf')
    await generateLlamaModel(path, { ...small, weightType: 'f16' })
    const layout = modelLayout(await readGguf(path))
    const e = small.embedding
    const kv = (e / small.heads) * small.kvHeads
    const f16 = (dims: number[]) => tensorByteSize(GgmlType.F16, dims)
    const perLayer = 2 * 4 * e + f16([e, e]) * 2 + f16([e, kv]) * 2 + f16([e, small.feedForward]) * 3
    assert.equal(layout.architecture, 'llama')
    assert.deepEqual(layout.layerBytes, [perLayer, perLayer])
    assert.equal(layout.kvBytesPerTokenPerLayer, 2 * kv * 2)
    assert.equal(layout.totalBytes, layout.inputBytes + layout.outputBytes + 2 * perLayer)
    assert.ok(layout.outputBytes > layout.inputBytes, 'output = norm + projection, input = embeddings')
  })

  it('refuses dimensions that do not split into heads', async () => {
    await assert.rejects(generateLlamaModel(join(dir, 'bad.gguf'), { ...small, heads: 5 }), {
      code: 'ERR_MODEL_SPEC'
    })
  })
})
