import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { describe, it } from 'node:test'
import { isLoopback, listeningSockets, parseLsof, parseProcNetTcp } from '../src/index.ts'

const HEADER =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
const row = (local: string, state: string, inode: number) =>
  `   0: ${local} 00000000:0000 ${state} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 100 0 0 10 0\n`

describe('listening sockets', () => {
  it('reads listening IPv4 rows of /proc/net/tcp, little-endian words and all', () => {
    const table =
      HEADER +
      row('0100007F:1F90', '0A', 11) + // 127.0.0.1:8080
      row('0200000A:0050', '0A', 12) + // 10.0.0.2:80
      row('00000000:0016', '0A', 13) + // 0.0.0.0:22
      row('0100007F:AAAA', '01', 14) // established: not a listener
    assert.deepEqual(parseProcNetTcp(table, false), [
      { inode: '11', socket: { address: '127.0.0.1', port: 8080, loopback: true } },
      { inode: '12', socket: { address: '10.0.0.2', port: 80, loopback: false } },
      { inode: '13', socket: { address: '0.0.0.0', port: 22, loopback: false } }
    ])
  })

  it('reads IPv6 rows: ::1 and v4-mapped loopback are loopback, :: is not', () => {
    const table =
      HEADER +
      row('00000000000000000000000001000000:1F90', '0A', 21) +
      row('0000000000000000FFFF00000100007F:1F91', '0A', 22) +
      row('00000000000000000000000000000000:1F92', '0A', 23)
    assert.deepEqual(
      parseProcNetTcp(table, true).map((r) => [r.socket.port, r.socket.loopback]),
      [
        [8080, true],
        [8081, true],
        [8082, false]
      ]
    )
  })

  it('reads lsof -Fn output (macOS)', () => {
    assert.deepEqual(parseLsof('p123\nf7\nn127.0.0.1:50052\nf8\nn*:50053\nf9\nn[::1]:50054\n'), [
      { address: '127.0.0.1', port: 50052, loopback: true },
      { address: '0.0.0.0', port: 50053, loopback: false },
      { address: '::1', port: 50054, loopback: true }
    ])
  })

  it('tells loopback from the rest', () => {
    assert.ok(isLoopback('127.0.0.1') && isLoopback('127.8.9.1') && isLoopback('::1'))
    assert.ok(
      !isLoopback('0.0.0.0') && !isLoopback('10.1.2.3') && !isLoopback('::') && !isLoopback('128.0.0.1')
    )
  })

  it(
    'finds this very process listening on loopback',
    { skip: process.platform !== 'linux' && 'Linux only' },
    async () => {
      const server = createServer()
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      try {
        const port = (server.address() as { port: number }).port
        const sockets = await listeningSockets(process.pid)
        assert.deepEqual(
          sockets?.filter((s) => s.port === port),
          [{ address: '127.0.0.1', port, loopback: true }]
        )
      } finally {
        server.close()
      }
    }
  )
})
