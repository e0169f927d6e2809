import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { AgentLeaseMessage, OrchestratorLeaseMessage } from '../src/index.ts'

const lease = { id: 3, pool: 'a', grantedAt: 1_700_000_000_000, ttlMs: 60_000, minSliceMs: 300_000 }

describe('lease messages: concurrent sharing fields (issue 8)', () => {
  it('reads a grant without the sharing fields, as older agents send it', () => {
    const parsed = AgentLeaseMessage.parse({ type: 'granted', version: 1, lease })
    assert.equal(parsed.type === 'granted' && parsed.lease.sharing, undefined)
  })

  it('carries the sharing mode and quota of a concurrent grant, and refuses other modes', () => {
    const grant = {
      type: 'granted',
      version: 1,
      lease: { ...lease, sharing: 'concurrent', quotaBytes: 2 ** 30 }
    }
    assert.deepEqual(AgentLeaseMessage.parse(grant), grant)
    const odd = { ...grant, lease: { ...grant.lease, sharing: 'shared' } }
    assert.equal(AgentLeaseMessage.safeParse(odd).success, false)
    const negative = { ...grant, lease: { ...grant.lease, quotaBytes: -1 } }
    assert.equal(AgentLeaseMessage.safeParse(negative).success, false)
  })

  it('takes the memory a request needs as an optional whole byte count', () => {
    const request = { type: 'request', version: 1, pool: 'a' }
    assert.ok(OrchestratorLeaseMessage.safeParse(request).success)
    assert.ok(OrchestratorLeaseMessage.safeParse({ ...request, memory: 5_000_000 }).success)
    for (const memory of [-1, 1.5, '5', 2 ** 53])
      assert.equal(OrchestratorLeaseMessage.safeParse({ ...request, memory }).success, false, String(memory))
  })
})
