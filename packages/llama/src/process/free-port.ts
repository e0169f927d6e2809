import { createServer } from 'node:net'

/**
 * Asks the kernel for a free loopback port. Racy by nature (someone may take it before our child
 * binds it), so callers that pass it to a child retry with a fresh port when the bind fails.
 * Needed because rpc-server refuses port 0 and does not flush the port it bound to a pipe.
 */
export async function freeLoopbackPort(host = '127.0.0.1'): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host, port: 0, exclusive: true }, resolve)
  })
  const address = server.address()
  await new Promise<void>((resolve) => server.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('no port assigned')
  return address.port
}
