import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  CONN_CAPS_SIZE,
  PendingResponses,
  RpcCommand,
  RpcProtocolError,
  RpcRequestParser,
  RpcResponseParser,
  encodeRequest,
  encodeResponse,
  encodeTensor,
  type RpcRequestFrame,
  type RpcResponseFrame
} from '../src/index.ts'

function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n)
  return b
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(n))
  return b
}

const weights = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251))

/** A session as llama-server opens one: HELLO, queries, an upload, a read back, a compute. */
const requests = Buffer.concat([
  encodeRequest(RpcCommand.Hello, new Uint8Array(CONN_CAPS_SIZE).fill(7)),
  encodeRequest(RpcCommand.DeviceCount),
  encodeRequest(RpcCommand.GetDeviceMemory, u32(0)),
  encodeRequest(RpcCommand.AllocBuffer, Buffer.concat([u32(0), u64(1 << 20)])),
  encodeRequest(
    RpcCommand.SetTensor,
    Buffer.concat([encodeTensor({ id: 1n, buffer: 0x1000n, data: 0x2000n }), u64(0), weights])
  ),
  encodeRequest(
    RpcCommand.GetTensor,
    Buffer.concat([encodeTensor({ id: 1n, buffer: 0x1000n, data: 0x2000n }), u64(0), u64(300)])
  ),
  encodeRequest(RpcCommand.GraphCompute, Buffer.concat([u32(0), u32(0), u32(0)])),
  encodeRequest(RpcCommand.GraphRecompute, u32(0))
])

const responses = Buffer.concat([
  encodeResponse(Buffer.concat([Buffer.from([6, 0, 0, 0]), Buffer.alloc(CONN_CAPS_SIZE, 9)])),
  encodeResponse(u32(1)),
  encodeResponse(Buffer.concat([u64(1000), u64(2000)])),
  encodeResponse(Buffer.concat([u64(0xabc000), u64(1 << 20)])),
  encodeResponse(weights.subarray(0, 300))
])

/** Feeds `bytes` in pieces of `size` and collects what the parser reports. */
function parseRequests(bytes: Buffer, size: number, pending = new PendingResponses()) {
  const frames: Array<RpcRequestFrame & { copy: Buffer }> = []
  const body: Buffer[] = []
  const parser = new RpcRequestParser({
    pending,
    onFrame: (frame) => frames.push({ ...frame, copy: Buffer.from(frame.bytes) }),
    onBody: (bytes) => body.push(Buffer.from(bytes))
  })
  for (let at = 0; at < bytes.length; at += size) parser.push(bytes.subarray(at, at + size))
  return { frames, body: Buffer.concat(body), parser, pending }
}

describe('RpcRequestParser', () => {
  for (const size of [1, 2, 7, 9, 64, 305, 4096, requests.length]) {
    it(`splits a session into commands whatever the chunking (${size}-byte chunks)`, () => {
      const { frames, body, parser, pending } = parseRequests(requests, size)
      assert.deepEqual(
        frames.map((f) => f.command),
        [14, 15, 11, 0, 6, 8, 10, 16]
      )
      assert.deepEqual(body, weights, 'SET_TENSOR weights stream through as body, unbuffered')
      assert.equal(frames[4]?.copy.length, 9 + 296 + 8, 'SET_TENSOR head is its tensor and offset')
      assert.equal(Buffer.concat(frames.map((f) => f.copy)).length + body.length, requests.length)
      assert.equal(parser.atBoundary, true)
      assert.deepEqual(
        [
          pending.shift(),
          pending.shift(),
          pending.shift(),
          pending.shift(),
          pending.shift(),
          pending.shift()
        ],
        [
          { command: RpcCommand.Hello, size: 28 },
          { command: RpcCommand.DeviceCount, size: 4 },
          { command: RpcCommand.GetDeviceMemory, size: 16 },
          { command: RpcCommand.AllocBuffer, size: 16 },
          { command: RpcCommand.GetTensor, size: 300 },
          undefined
        ]
      )
    })
  }

  it('hands over frame bytes that can be rewritten in place (HELLO caps zeroed)', () => {
    const parser = new RpcRequestParser({
      onFrame: (frame) => {
        if (frame.command === RpcCommand.Hello) frame.bytes.fill(0, 9)
      }
    })
    const hello = encodeRequest(RpcCommand.Hello, new Uint8Array(CONN_CAPS_SIZE).fill(7))
    parser.push(hello)
    assert.deepEqual(hello.subarray(9), Buffer.alloc(CONN_CAPS_SIZE))
  })

  it('reports a stream cut inside a frame as not at a boundary', () => {
    const { parser } = parseRequests(requests.subarray(0, 40), 40)
    assert.equal(parser.atBoundary, false)
  })

  const hello = encodeRequest(RpcCommand.Hello, new Uint8Array(CONN_CAPS_SIZE))
  const refusals: Array<[string, Buffer, string]> = [
    ['a first command other than HELLO', encodeRequest(RpcCommand.DeviceCount), 'ERR_RPC_HELLO_EXPECTED'],
    ['a second HELLO', Buffer.concat([hello, hello]), 'ERR_RPC_UNEXPECTED_HELLO'],
    [
      'an unknown command id',
      Buffer.concat([hello, encodeRequest(18 as RpcCommand)]),
      'ERR_RPC_UNKNOWN_COMMAND'
    ],
    ['command id 255', Buffer.concat([hello, encodeRequest(255 as RpcCommand)]), 'ERR_RPC_UNKNOWN_COMMAND'],
    [
      'a fixed-size command of the wrong size',
      Buffer.concat([hello, encodeRequest(RpcCommand.GetDeviceMemory, u64(0))]),
      'ERR_RPC_BAD_SIZE'
    ],
    [
      'a SET_TENSOR shorter than its tensor',
      Buffer.concat([hello, encodeRequest(RpcCommand.SetTensor, Buffer.alloc(100))]),
      'ERR_RPC_BAD_SIZE'
    ],
    [
      'a HELLO of the wrong size (older protocol)',
      encodeRequest(RpcCommand.Hello, Buffer.alloc(0)),
      'ERR_RPC_BAD_SIZE'
    ]
  ]
  for (const [what, bytes, code] of refusals) {
    it(`refuses ${what}`, () => {
      const parser = new RpcRequestParser({ onFrame: () => {} })
      assert.throws(
        () => parser.push(bytes),
        (err) => err instanceof RpcProtocolError && err.code === code
      )
      assert.throws(() => parser.push(hello), RpcProtocolError, 'a failed parser stays failed')
    })
  }

  it('refuses a size near 2^64 before reading any payload', () => {
    const frame = Buffer.concat([
      hello,
      Buffer.from([RpcCommand.SetTensor]),
      Buffer.from('f0ffffffffffffff', 'hex')
    ])
    const parser = new RpcRequestParser({ onFrame: () => {} })
    assert.throws(() => parser.push(frame), { code: 'ERR_RPC_FRAME_TOO_LARGE' })
  })

  it('refuses a payload over the configured limit', () => {
    const parser = new RpcRequestParser({ maxPayloadSize: 1024, onFrame: () => {} })
    const big = encodeRequest(RpcCommand.SetTensor, Buffer.alloc(2048))
    assert.throws(() => parser.push(Buffer.concat([hello, big.subarray(0, 9)])), {
      code: 'ERR_RPC_FRAME_TOO_LARGE'
    })
  })

  it('refuses a GET_TENSOR that asks for more than the limit', () => {
    const parser = new RpcRequestParser({
      maxPayloadSize: 1024,
      pending: new PendingResponses(),
      onFrame: () => {}
    })
    const get = encodeRequest(RpcCommand.GetTensor, Buffer.concat([encodeTensor({}), u64(0), u64(4096)]))
    assert.throws(() => parser.push(Buffer.concat([hello, get])), { code: 'ERR_RPC_FRAME_TOO_LARGE' })
  })
})

describe('RpcResponseParser', () => {
  for (const size of [1, 3, 8, 37, responses.length]) {
    it(`matches responses to their commands in order (${size}-byte chunks)`, () => {
      const { pending } = parseRequests(requests, requests.length)
      const frames: RpcResponseFrame[] = []
      const body: Buffer[] = []
      const parser = new RpcResponseParser({
        pending,
        onFrame: (frame) => frames.push({ ...frame, bytes: Buffer.from(frame.bytes) }),
        onBody: (bytes) => body.push(Buffer.from(bytes))
      })
      for (let at = 0; at < responses.length; at += size) parser.push(responses.subarray(at, at + size))
      assert.deepEqual(
        frames.map((f) => [f.command, f.payloadSize]),
        [
          [14, 28],
          [15, 4],
          [11, 16],
          [0, 16],
          [8, 300]
        ]
      )
      assert.deepEqual(Buffer.concat(body), weights.subarray(0, 300), 'GET_TENSOR data streams as body')
      assert.equal(frames[0]?.bytes.length, 8 + 28, 'fixed-size responses come whole')
      assert.equal(parser.atBoundary, true)
      assert.equal(pending.length, 0)
    })
  }

  it('refuses a response nobody asked for', () => {
    const parser = new RpcResponseParser({ pending: new PendingResponses(), onFrame: () => {} })
    assert.throws(() => parser.push(encodeResponse(u32(1))), { code: 'ERR_RPC_UNEXPECTED_RESPONSE' })
  })

  it('refuses a response of the wrong size', () => {
    const pending = new PendingResponses()
    pending.push({ command: RpcCommand.DeviceCount, size: 4 })
    const parser = new RpcResponseParser({ pending, onFrame: () => {} })
    assert.throws(() => parser.push(encodeResponse(u64(1))), { code: 'ERR_RPC_BAD_RESPONSE_SIZE' })
  })
})
