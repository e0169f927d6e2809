/** A real ggml-rpc-server started by our supervisor code in a process of its own; prints its port. */
import { silentLogger, startRpcServer } from '@frankenstein-mesh/llama'

const server = await startRpcServer({ binary: process.argv[2] ?? 'ggml-rpc-server', logger: silentLogger() })
console.log(JSON.stringify({ port: server.port }))
process.on('SIGTERM', () => void server.stop().finally(() => process.exit(0)))
