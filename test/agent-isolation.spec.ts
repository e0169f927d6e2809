/**
 * Cross-pool attacks through a real agent with concurrent sharing: each crosses a real
 * orchestrator-side tunnel, the agent's gate and its multiplexer, and must drop the attacker's
 * session alone, while the victim pool's session keeps its data. (test/rpc-mux.spec.ts runs the
 * same attacks against a bare multiplexer.)
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { RpcCommand, encodeRequest, silentLogger } from '@frankenstein-mesh/llama'
import { startRpcTunnel, type RpcTunnel } from '@frankenstein-mesh/tunnel'
import { HELLO, RawSession, crossPoolAttacks, f32, withRealBuffer, type RealBuffer } from './fixtures/fuzz.ts'
import { leasedAgent } from './fixtures/leased-agent.ts'

const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(n)
  return b
}
const PATTERN = Buffer.alloc(64, 0x5a)

describe(
  'hostile sessions through an agent that shares its rpc-server (--sharing concurrent)',
  { timeout: 180_000 },
  () => {
    /** What `before` started, in order: `after` ends it in reverse, however far `before` got. */
    const started: Array<() => unknown> = []
    let victimTunnel: RpcTunnel
    let hostileTunnel: RpcTunnel
    let victim: RawSession
    let victimBuffer: RealBuffer

    /** The victim's 64 bytes at the start of its buffer, read by its own session. */
    const victimBytes = async (): Promise<Buffer | undefined> => {
      victim.write(
        encodeRequest(
          RpcCommand.GetTensor,
          Buffer.concat([f32(victimBuffer.ptr, victimBuffer.base), u64(0n), u64(64n)])
        )
      )
      return (await victim.read(8 + 64))?.subarray(8)
    }

    before(async () => {
      const leased = await leasedAgent('victim', { pools: ['hostile'], join: ['--sharing', 'concurrent'] })
      started.push(() => leased.stop())
      const hostileNode = await leased.holder('hostile')
      const logger = silentLogger()
      victimTunnel = await startRpcTunnel({ node: leased.node, peer: leased.peer, logger })
      started.push(() => victimTunnel.close())
      hostileTunnel = await startRpcTunnel({ node: hostileNode, peer: leased.peer, logger })
      started.push(() => hostileTunnel.close())
      victim = await RawSession.open(victimTunnel.port)
      started.push(() => victim.destroy())
      const buffer = await withRealBuffer(victim)
      assert.ok(buffer !== undefined, 'the victim pool got a buffer through the agent')
      victimBuffer = buffer
      victim.write(
        encodeRequest(
          RpcCommand.SetTensor,
          Buffer.concat([f32(victimBuffer.ptr, victimBuffer.base), u64(0n), PATTERN])
        )
      )
      assert.deepEqual(await victimBytes(), PATTERN, 'the victim wrote and reads its own bytes')
    })
    after(async () => {
      for (const end of started.reverse()) await end()
    })

    it("drops each attack on the other pool's buffer alone; the victim keeps its session and its bytes", async () => {
      const probe = await RawSession.open(hostileTunnel.port)
      const own = await withRealBuffer(probe)
      assert.ok(own !== undefined, 'an honest session of the hostile pool gets a buffer')
      probe.destroy()
      const count = crossPoolAttacks(victimBuffer, own).length
      for (let k = 0; k < count; k++) {
        const hostile = await RawSession.open(hostileTunnel.port)
        const mine = await withRealBuffer(hostile)
        assert.ok(mine !== undefined, `attack ${k}: the hostile session opened`)
        const [name, attack] = crossPoolAttacks(victimBuffer, mine)[k] as [string, Buffer]
        hostile.write(attack)
        assert.ok(await hostile.closedWithin(10_000), `${name}: the hostile session was dropped`)
        assert.equal(await hostile.read(1, 100), undefined, `${name}: nothing came back`)
        assert.deepEqual(
          await victimBytes(),
          PATTERN,
          `${name}: the victim's bytes are intact, its session open`
        )
      }
    })

    it('still takes new sessions of the hostile pool afterwards', async () => {
      const session = await RawSession.open(hostileTunnel.port)
      session.write(HELLO)
      assert.ok((await session.read(8 + 28)) !== undefined, 'HELLO answered')
      session.destroy()
    })
  }
)
