import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  PoolAuthError,
  checkCredential,
  createCredential,
  createInvite,
  createRevocations,
  ephemeralPrivateKey,
  ownerOf,
  readInvite,
  readRevocations
} from '../src/index.ts'

const owner = await ephemeralPrivateKey()
const stranger = await ephemeralPrivateKey()
const orchestrator = ownerOf(await ephemeralPrivateKey())
const hour = 3_600_000
const fields = { pool: 'a', subject: orchestrator, serial: 7, issued: Date.now(), expires: Date.now() + hour }
const check = { pool: 'a', owner: ownerOf(owner), subject: orchestrator, revoked: new Set<number>() }
const refusal = (reason: string) => (err: unknown) => err instanceof PoolAuthError && err.reason === reason

describe('invites', () => {
  it('round-trip, signed by the owner', async () => {
    const invite = await createInvite(owner, {
      pool: 'a',
      bootstrap: ['/ip4/1.2.3.4/tcp/4001/p2p/x'],
      expires: Date.now() + hour,
      admission: 'invite'
    })
    assert.match(invite, /^fm-invite:[A-Za-z0-9_-]+$/)
    const read = await readInvite(invite)
    assert.equal(read.pool, 'a')
    assert.equal(read.owner, ownerOf(owner))
  })

  it('refuses an expired, a tampered, a truncated and a foreign string', async () => {
    await assert.rejects(
      readInvite(
        await createInvite(owner, { pool: 'a', bootstrap: [], expires: Date.now() - 1, admission: 'open' })
      ),
      refusal('expired')
    )
    const invite = await createInvite(owner, {
      pool: 'a',
      bootstrap: [],
      expires: Date.now() + hour,
      admission: 'open'
    })
    const body = JSON.parse(Buffer.from(invite.slice('fm-invite:'.length), 'base64url').toString()) as {
      p: string
      s: string
    }
    const forged = `fm-invite:${Buffer.from(JSON.stringify({ ...body, p: body.p.replace('"a"', '"b"') })).toString('base64url')}`
    await assert.rejects(readInvite(forged), refusal('bad-credential'))
    await assert.rejects(readInvite(invite.slice(0, 40)), refusal('bad-credential'))
    await assert.rejects(readInvite('fm-invite:' + 'A'.repeat(40_000)), refusal('bad-credential'))
    await assert.rejects(readInvite('hello'), refusal('bad-credential'))
  })

  it('survives a thousand random mutations without accepting one or throwing anything else', async () => {
    const invite = await createInvite(owner, {
      pool: 'a',
      bootstrap: [],
      expires: Date.now() + hour,
      admission: 'open'
    })
    let seed = 42
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
    for (let i = 0; i < 1000; i++) {
      const chars = Array.from(invite)
      const at = Math.floor(random() * chars.length)
      chars[at] = String.fromCharCode(32 + Math.floor(random() * 95))
      const mutated = chars.join('')
      if (mutated === invite) continue
      await readInvite(mutated).then(
        (read) =>
          assert.equal(
            read.owner,
            ownerOf(owner),
            'a mutation that still verifies must be the same document'
          ),
        (err: unknown) => assert.ok(err instanceof PoolAuthError, String(err))
      )
    }
  })
})

describe('orchestrator credentials', () => {
  it('hold for their subject, pool and owner', async () => {
    const credential = await createCredential(owner, fields)
    assert.equal((await checkCredential(credential, check)).serial, 7)
  })

  it('are refused missing, for another pool, owner or subject, expired or revoked', async () => {
    const credential = await createCredential(owner, fields)
    await assert.rejects(checkCredential(undefined, check), refusal('no-credential'))
    await assert.rejects(checkCredential(credential, { ...check, pool: 'b' }), refusal('bad-credential'))
    await assert.rejects(
      checkCredential(await createCredential(stranger, fields), check),
      refusal('wrong-owner')
    )
    await assert.rejects(
      checkCredential(credential, { ...check, subject: ownerOf(stranger) }),
      refusal('wrong-subject')
    )
    await assert.rejects(
      checkCredential(credential, { ...check, now: Date.now() + 2 * hour }),
      refusal('expired')
    )
    await assert.rejects(checkCredential(credential, { ...check, revoked: new Set([7]) }), refusal('revoked'))
  })

  it('carry revocation lists only the owner can sign', async () => {
    const list = await readRevocations(
      await createRevocations(owner, { pool: 'a', serials: [7], issued: Date.now() })
    )
    assert.deepEqual(list.serials, [7])
    assert.equal(list.owner, ownerOf(owner))
  })
})
