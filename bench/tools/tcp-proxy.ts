/**
 * A plain TCP proxy, one process: the "no encryption, no multiplexing" hop that bounds what any
 * tunnel can reach on this machine. Prints `listening <port>` on stdout once ready.
 * Usage: node bench/tools/tcp-proxy.ts <target-host> <target-port> [listen-host]
 */
import { connect, createServer } from 'node:net'

const [targetHost = '127.0.0.1', targetPort = '0', listenHost = '127.0.0.1'] = process.argv.slice(2)

const server = createServer({ noDelay: true }, (client) => {
  const upstream = connect({ host: targetHost, port: Number(targetPort), noDelay: true })
  client.pipe(upstream)
  upstream.pipe(client)
  client.on('error', () => upstream.destroy())
  upstream.on('error', () => client.destroy())
  client.on('close', () => upstream.destroy())
  upstream.on('close', () => client.destroy())
})
server.listen({ host: listenHost, port: 0 }, () => {
  const address = server.address()
  if (address !== null && typeof address !== 'string') console.log(`listening ${address.port}`)
})
process.on('SIGTERM', () => process.exit(0))
