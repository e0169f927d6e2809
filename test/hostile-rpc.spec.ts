import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import {
  CONN_CAPS_SIZE,
  RpcCommand,
  connectRpc,
  encodeRequest,
  encodeTensor,
  TensorField,
  silentLogger
} from '@frankenstein-mesh/llama'
import {
  createMeshNode,
  ephemeralPrivateKey,
  multiaddr,
  peerIdFromString,
  type MeshNode
} from '@frankenstein-mesh/mesh'
import { PROTOCOL } from '@frankenstein-mesh/protocol'
import { startRpcTunnel } from '@frankenstein-mesh/tunnel'
import type { AgentProcess } from './fixtures/agent-process.ts'
import { leasedAgent, type LeasedAgent } from './fixtures/leased-agent.ts'

const hello = encodeRequest(RpcCommand.Hello, new Uint8Array(CONN_CAPS_SIZE))
const u32 = (n: number): Buffer => Buffer.from(new Uint32Array([n]).buffer)

/** A graph of a leaf and a GGML_OP_ADD node naming only one of its two sources. */
function graphWithMissingSource(): Buffer {
  const leaf = encodeTensor({ id: 1n })
  const add = encodeTensor({ id: 2n })
  add.writeUInt32LE(2, TensorField.op) // GGML_OP_ADD
  add.writeBigUInt64LE(1n, TensorField.src) // src[0]; src[1] left null
  const body = Buffer.concat([u32(0), u32(1), size(2n), u32(2), leaf, add])
  return encodeRequest(RpcCommand.GraphCompute, body)
}
const size = (n: bigint): Buffer => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(n)
  return b
}

/** Byte streams an honest llama-server never sends; each must be cut off by the agent's gate. */
const HOSTILE: Array<[string, Buffer]> = [
  ['a command before HELLO', encodeRequest(RpcCommand.GraphCompute, Buffer.alloc(12))],
  ['an unknown command id', Buffer.concat([hello, Buffer.from([200]), size(0n)])],
  [
    'a fixed-size command of the wrong size',
    Buffer.concat([hello, encodeRequest(RpcCommand.BufferGetBase, Buffer.alloc(3))])
  ],
  [
    'a SET_TENSOR claiming 2^64-1 bytes',
    Buffer.concat([hello, Buffer.from([RpcCommand.SetTensor]), size(2n ** 64n - 1n)])
  ],
  [
    'a GET_TENSOR asking for 2^62 bytes back',
    Buffer.concat([
      hello,
      encodeRequest(RpcCommand.GetTensor, Buffer.concat([encodeTensor({}), size(0n), size(2n ** 62n)]))
    ])
  ],
  ['an old-protocol HELLO', encodeRequest(RpcCommand.Hello, Buffer.alloc(0))],
  ['a second HELLO', Buffer.concat([hello, hello])],
  // rpc-server dereferences a node's sources unchecked: this one was a SIGSEGV at the pinned commit.
  ['a graph node without the sources its op reads', Buffer.concat([hello, graphWithMissingSource()])],
  ['random bytes', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 256))]
]

describe('hostile RPC through an agent', { timeout: 120_000 }, () => {
  let leased: LeasedAgent
  let agent: AgentProcess
  let node: MeshNode

  before(async () => {
    leased = await leasedAgent('hostile')
    ;({ agent, node } = leased)
  })
  after(() => leased.stop())

  it('resets the RPC stream of a peer without a lease before a byte reaches rpc-server', async () => {
    const stranger = await createMeshNode({
      privateKey: await ephemeralPrivateKey(),
      listen: ['/ip4/127.0.0.1/tcp/0']
    })
    try {
      await stranger.dial(multiaddr(agent.addresses[0] ?? ''))
      const stream = await stranger.dialProtocol(peerIdFromString(agent.peerId), PROTOCOL.rpc)
      const closed = new Promise<void>((resolve) =>
        stream.addEventListener('close', () => resolve(), { once: true })
      )
      try {
        stream.send(hello)
      } catch {
        // already reset: the refusal came first
      }
      if (stream.status === 'open') await closed
      assert.equal(stream.status, 'reset')
      // Had the HELLO reached rpc-server, that connection would still occupy it; it answers at once.
      const direct = await connectRpc({ port: agent.rpcPort, timeoutMs: 2_000 })
      direct.close()
    } finally {
      await stranger.stop()
    }
  })

  for (const [what, bytes] of HOSTILE) {
    it(`resets the stream on ${what}, and rpc-server serves the next honest client`, async () => {
      const stream = await node.dialProtocol(peerIdFromString(agent.peerId), PROTOCOL.rpc)
      const closed = new Promise<Event & { error?: Error }>((resolve) =>
        stream.addEventListener('close', resolve, { once: true })
      )
      stream.send(bytes)
      const event = await closed
      assert.equal(
        event.error?.name,
        'StreamResetError',
        `the agent reset the stream (${String(event.error)})`
      )

      // rpc-server is still up, answering a fresh client on its own port...
      const direct = await connectRpc({ port: agent.rpcPort })
      assert.equal(direct.version.major, 6)
      direct.close()
      // ...and through the mesh.
      const tunnel = await startRpcTunnel({
        node,
        peer: peerIdFromString(agent.peerId),
        logger: silentLogger()
      })
      try {
        const client = await connectRpc({ port: tunnel.port })
        assert.equal(await client.deviceCount(), 1)
        client.close()
      } finally {
        await tunnel.close()
      }
    })
  }
})
