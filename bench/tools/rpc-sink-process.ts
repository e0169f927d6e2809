/** The stand-in rpc-server of test/fixtures/rpc-sink.ts as its own process; prints its port. */
import { startRpcSink } from '../../test/fixtures/rpc-sink.ts'

const sink = await startRpcSink(process.argv[2] ?? '127.0.0.1')
console.log(JSON.stringify({ port: sink.port }))
process.on('SIGTERM', () => void sink.close().finally(() => process.exit(0)))
