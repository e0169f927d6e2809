/**
 * test/fixtures/delay-relay.ts as a process: listen on <host>, forward to 127.0.0.1:<port>,
 * holding each direction for <delayMs>. Prints `{"port":...}`.
 */
import { startDelayRelay } from '../../test/fixtures/delay-relay.ts'

const [host = '127.0.0.1', targetPort = '0', delayMs = '10'] = process.argv.slice(2)
const relay = await startDelayRelay({
  host,
  targetHost: '127.0.0.1',
  targetPort: Number(targetPort),
  delayMs: Number(delayMs)
})
console.log(JSON.stringify({ port: relay.port }))
process.on('SIGTERM', () => void relay.close().finally(() => process.exit(0)))
