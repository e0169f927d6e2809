import type { Duplex } from 'node:stream'

/**
 * Answers an HTTP upgrade we will not take with `status` (e.g. `404 Not Found`) and closes the
 * socket. Node hands an upgrade's socket over without its own error handler and stops tracking it
 * for `closeAllConnections()`: a reset would be an unhandled error, and a client that never closes
 * its side would hold the socket (and the server's close) forever. So errors are swallowed and the
 * socket is destroyed once the answer is written, as `ws` does for the handshakes it aborts.
 */
export function refuseUpgrade(socket: Duplex, status: string): void {
  socket.on('error', () => socket.destroy())
  socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`, () => socket.destroy())
}
