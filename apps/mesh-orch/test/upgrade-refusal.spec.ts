import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { describe, it } from 'node:test'
import { refuseUpgrade } from '../src/upgrade-refusal.ts'

describe('refusing an HTTP upgrade', () => {
  it('answers, and lets the server close though the client never closes its side', async () => {
    const server = createServer()
    server.on('upgrade', (_req, socket) => refuseUpgrade(socket, '404 Not Found'))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const address = server.address()
    assert.ok(address !== null && typeof address === 'object')
    // A client that keeps its side open: only the server's destroy can end this connection.
    const client = connect({ host: '127.0.0.1', port: address.port, allowHalfOpen: true })
    let answer = ''
    client.on('data', (chunk: Buffer) => (answer += chunk.toString()))
    const ended = new Promise<void>((resolve) => client.once('end', () => resolve()))
    client.write('GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n')
    await ended
    assert.match(answer, /^HTTP\/1\.1 404 Not Found\r\n/)
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    let timer: NodeJS.Timeout | undefined
    const outcome = await Promise.race([
      closed.then(() => 'closed'),
      new Promise((resolve) => (timer = setTimeout(() => resolve('still open'), 5_000)))
    ])
    clearTimeout(timer)
    client.destroy()
    assert.equal(outcome, 'closed', 'the refused socket does not hold the server open')
  })
})
