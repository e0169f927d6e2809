import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  CONN_CAPS_SIZE,
  RpcCommand,
  encodeRequest,
  encodeResponse,
  encodeTensor,
  TensorField
} from '@frankenstein-mesh/llama'
import { NO_TRAFFIC, RpcGate, addTraffic, type RpcTraffic } from '../src/rpc-gate.ts'
import { MAX_GRAPH_BYTES } from '../src/rpc-isolation.ts'

const u64 = (n: number): Buffer => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(n))
  return b
}
const hello = encodeRequest(RpcCommand.Hello, Buffer.alloc(CONN_CAPS_SIZE, 0xaa))
const upload = encodeRequest(
  RpcCommand.SetTensor,
  Buffer.concat([encodeTensor({ id: 1n }), u64(0), Buffer.alloc(3000, 5)])
)
const read = encodeRequest(RpcCommand.GetTensor, Buffer.concat([encodeTensor({ id: 1n }), u64(0), u64(100)]))
const session = Buffer.concat([hello, upload, read])

/** Pushes `bytes` through the request side in pieces of `size`; returns what was forwarded. */
function throughRequests(gate: RpcGate, bytes: Buffer, size: number): Buffer {
  const out: Buffer[] = []
  for (let at = 0; at < bytes.length; at += size)
    gate.request(bytes.subarray(at, at + size), (b) => out.push(Buffer.from(b)))
  return Buffer.concat(out)
}

const u32 = (n: number): Buffer => Buffer.from(new Uint32Array([n]).buffer)

/** GRAPH_COMPUTE of a leaf (id 1) and a GGML_OP_ADD node (id 2) naming the sources given. */
function addGraph(sources: bigint[]): Buffer {
  const add = encodeTensor({ id: 2n })
  add.writeUInt32LE(2, TensorField.op)
  sources.forEach((id, i) => add.writeBigUInt64LE(id, TensorField.src + 8 * i))
  return encodeRequest(
    RpcCommand.GraphCompute,
    Buffer.concat([u32(0), u32(1), u64(2), u32(2), encodeTensor({ id: 1n }), add])
  )
}

describe('RpcGate', () => {
  for (const size of [1, 5, 9, 100, session.length]) {
    it(`forwards a valid session whole, caps zeroed (${size}-byte chunks)`, () => {
      const forwarded = throughRequests(new RpcGate(), Buffer.from(session), size)
      const expected = Buffer.from(session)
      expected.fill(0, 9, 9 + CONN_CAPS_SIZE)
      assert.deepEqual(forwarded, expected)
    })
  }

  it('holds back a header until it is whole, and forwards nothing of a bad one', () => {
    const gate = new RpcGate()
    const forwarded: Buffer[] = []
    const forward = (b: Uint8Array) => forwarded.push(Buffer.from(b))
    gate.request(hello, forward)
    const count = forwarded.length
    const bad = Buffer.concat([Buffer.from([RpcCommand.SetTensor]), Buffer.from('ffffffffffffff7f', 'hex')])
    gate.request(bad.subarray(0, 5), forward)
    assert.equal(forwarded.length, count, 'half a header went nowhere')
    assert.throws(() => gate.request(bad.subarray(5), forward), { code: 'ERR_RPC_FRAME_TOO_LARGE' })
    assert.equal(forwarded.length, count)
  })

  it('forwards a well-formed graph whole, in any chunking', () => {
    const graph = addGraph([1n, 1n])
    for (const size of [1, 7, 300, graph.length]) {
      const gate = new RpcGate({ checkGraphs: true })
      const forwarded = throughRequests(gate, Buffer.concat([hello, graph]), size)
      assert.deepEqual(forwarded.subarray(hello.length), graph)
      assert.equal(gate.snapshot().uploadBytes, 0, 'a graph is not an upload')
    }
  })

  it('refuses a graph rpc-server would crash on before forwarding a byte of it', () => {
    for (const [what, graph] of [
      ['a node without the sources its op reads', addGraph([1n])],
      ['a source outside the graph', addGraph([1n, 9n])]
    ] as const) {
      const gate = new RpcGate({ checkGraphs: true })
      const forwarded: Buffer[] = []
      gate.request(hello, (b) => forwarded.push(Buffer.from(b)))
      assert.throws(
        () => gate.request(graph, (b) => forwarded.push(Buffer.from(b))),
        { code: 'ERR_RPC_BAD_GRAPH' },
        what
      )
      assert.equal(Buffer.concat(forwarded).length, hello.length, what)
    }
  })

  it('streams graphs through unchecked when not asked to check them (the orchestrator end)', () => {
    const graph = addGraph([1n])
    const gate = new RpcGate()
    const forwarded = throughRequests(gate, Buffer.concat([hello, graph]), 7)
    assert.deepEqual(forwarded.subarray(hello.length), graph)
    assert.equal(gate.snapshot().uploadBytes, 0, 'a streamed graph is not an upload either')
  })

  it('refuses a graph over the size it checks, without holding it', () => {
    const gate = new RpcGate({ checkGraphs: true })
    gate.request(hello, () => {})
    const header = Buffer.concat([Buffer.from([RpcCommand.GraphCompute]), u64(MAX_GRAPH_BYTES + 1)])
    assert.throws(() => gate.request(Buffer.concat([header, Buffer.alloc(12)]), () => {}), {
      code: 'ERR_RPC_GRAPH_TOO_LARGE'
    })
  })

  it('refuses a first command other than HELLO before forwarding a byte', () => {
    const forwarded: Uint8Array[] = []
    assert.throws(() => new RpcGate().request(read, (b) => forwarded.push(b)), {
      code: 'ERR_RPC_HELLO_EXPECTED'
    })
    assert.deepEqual(forwarded, [])
  })

  it('zeroes the caps in the HELLO reply and counts the traffic', () => {
    const gate = new RpcGate()
    throughRequests(gate, Buffer.from(session), 64)
    const reply = encodeResponse(
      Buffer.concat([Buffer.from([6, 0, 0, 0]), Buffer.alloc(CONN_CAPS_SIZE, 0xbb)])
    )
    const data = encodeResponse(Buffer.alloc(100, 9))
    const out: Buffer[] = []
    gate.response(Buffer.concat([reply, data]), (b) => out.push(Buffer.from(b)))
    const forwarded = Buffer.concat(out)
    assert.deepEqual(forwarded.subarray(8, 12), Buffer.from([6, 0, 0, 0]))
    assert.deepEqual(forwarded.subarray(12, 36), Buffer.alloc(CONN_CAPS_SIZE))
    assert.deepEqual(forwarded.subarray(36), data)
    const traffic = gate.snapshot()
    assert.deepEqual(traffic.commands, { SET_TENSOR: 1, GET_TENSOR: 1, HELLO: 1 })
    assert.equal(traffic.uploadBytes, 3000)
    assert.equal(traffic.requestBytes, session.length)
  })
})

describe('RpcGate memory metering', () => {
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4)
    b.writeUInt32LE(n)
    return b
  }
  const respond = (gate: RpcGate, payload: Buffer) => gate.response(encodeResponse(payload), () => {})
  const ask = (gate: RpcGate, bytes: Buffer) => gate.request(bytes, () => {})

  it('holds what ALLOC_BUFFER granted until FREE_BUFFER or the end, and integrates it over time', async () => {
    const gate = new RpcGate()
    ask(gate, hello)
    respond(gate, Buffer.alloc(4 + CONN_CAPS_SIZE))
    for (const [ptr, size] of [
      [0x1000, 4096],
      [0x9000, 1 << 20]
    ] as const) {
      ask(gate, encodeRequest(RpcCommand.AllocBuffer, Buffer.concat([u32(0), u64(size)])))
      respond(gate, Buffer.concat([u64(ptr), u64(size)]))
    }
    // A failed allocation (null pointer) holds nothing.
    ask(gate, encodeRequest(RpcCommand.AllocBuffer, Buffer.concat([u32(0), u64(1 << 30)])))
    respond(gate, Buffer.concat([u64(0), u64(0)]))
    assert.equal(gate.snapshot().heldBytes, 4096 + (1 << 20))

    await new Promise((r) => setTimeout(r, 20))
    ask(gate, encodeRequest(RpcCommand.FreeBuffer, u64(0x9000)))
    assert.equal(gate.snapshot().heldBytes, 4096)
    const held = gate.snapshot().memoryGiBs
    assert.ok(held >= ((1 << 20) * 0.015) / 1024 ** 3, `${held} GiB-s after ~20 ms of 1 MiB`)

    gate.end()
    const final = gate.snapshot()
    assert.equal(final.heldBytes, 0)
    await new Promise((r) => setTimeout(r, 10))
    assert.equal(gate.snapshot().memoryGiBs, final.memoryGiBs, 'nothing accrues after the end')
  })
})

describe('traffic totals', () => {
  it("adds connections' counters field by field and counts the connections", () => {
    const gates = [new RpcGate(), new RpcGate()]
    gates.forEach((gate, i) => gate.request(Buffer.concat([hello, ...(i === 0 ? [upload] : [])]), () => {}))
    const [one, two] = gates.map((g) => g.snapshot()) as [RpcTraffic, RpcTraffic]
    const total = [one, two].reduce(addTraffic, NO_TRAFFIC)
    assert.equal(total.connections, 2)
    assert.equal(total.requestBytes, one.requestBytes + two.requestBytes)
    assert.equal(total.uploadBytes, 3000)
    assert.deepEqual([].reduce(addTraffic, NO_TRAFFIC), NO_TRAFFIC)
  })
})
