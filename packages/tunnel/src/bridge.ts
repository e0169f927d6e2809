import type { Duplex } from 'node:stream'
import type { Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { halfWindowUpdates } from './window-updates.ts'

/**
 * Decides what of a chunk goes on: it calls `forward` with the bytes to pass (the chunk itself,
 * pieces of it, rewritten pieces) and may hold back what it cannot judge yet. Throwing ends the
 * bridge; nothing of the offending chunk has been forwarded then.
 */
export type Gate = (chunk: Uint8Array, forward: (bytes: Uint8Array) => void) => void

export interface BridgeInit {
  /** A TCP socket, or one end of an in-process pair (the agent's way into its multiplexer). */
  readonly socket: Duplex
  readonly stream: Stream
  /** Gate for socket -> stream; everything passes when absent. */
  readonly fromSocket?: Gate | undefined
  /** Gate for stream -> socket. */
  readonly fromStream?: Gate | undefined
}

const passThrough: Gate = (chunk, forward) => forward(chunk)

/** How a bridge ended: both sides closed in order, or cut (with the first error seen). */
export interface BridgeEnd {
  readonly clean: boolean
  readonly error?: Error | undefined
}

/**
 * Pipes a TCP socket and a libp2p stream into each other until both directions are done. The
 * socket must allow half-open connections (`allowHalfOpen: true`) for half-closes to carry over.
 *
 * - Backpressure both ways: a full stream pauses the socket until 'drain' (stream.onDrain() only
 *   waits once, so the event is used); a full socket pauses the stream until the socket drains.
 * - Half-close travels: socket FIN -> stream close(), stream 'end' -> socket end().
 * - Resets travel: a socket error aborts the stream; a stream that closes with an error, or
 *   without the remote having closed its write side first (a dead peer looks like that), destroys
 *   the socket.
 */
export function bridge(init: BridgeInit): Promise<BridgeEnd> {
  const { socket, stream } = init
  halfWindowUpdates(stream)
  const { promise, resolve } = Promise.withResolvers<BridgeEnd>()
  let failure: Error | undefined
  let socketClosed = false
  let streamClosed = false
  let remoteClosedWrite = false

  const settle = (): void => {
    if (socketClosed && streamClosed) resolve({ clean: failure === undefined, error: failure })
  }
  const fail = (err: unknown): void => {
    failure ??= err instanceof Error ? err : new Error(String(err))
    stream.abort(failure)
    socket.destroy()
  }

  // Reads that arrive in one turn of the event loop leave as one message: one Yamux frame and
  // one write instead of one per 64 KiB read (bulk), or per command/size/payload piece (RPC).
  let pending: Uint8Array[] = []
  const toStream = (bytes: Uint8Array): void => {
    if (pending.push(bytes) === 1) setImmediate(flush)
  }
  const flush = (): void => {
    if (pending.length === 0) return
    const chunks = pending
    pending = []
    try {
      const ok = stream.send(chunks.length === 1 ? (chunks[0] as Uint8Array) : new Uint8ArrayList(...chunks))
      if (!ok) {
        socket.pause()
        waitDrain(stream).then(() => socket.resume(), fail)
      }
    } catch (err) {
      fail(err)
    }
  }
  const fromSocket = init.fromSocket ?? passThrough
  socket.on('data', (chunk: Buffer) => {
    try {
      fromSocket(chunk, toStream)
    } catch (err) {
      pending = []
      fail(err)
    }
  })
  let socketEnded = false
  socket.on('end', () => {
    socketEnded = true
    if (pending.length > 0) flush()
    stream.close().catch(fail)
  })
  socket.on('error', fail)
  socket.on('close', () => {
    socketClosed = true
    // Sockets are half-open capable: 'close' without both FINs means it was destroyed.
    if (!socketEnded || !socket.writableFinished) fail(new Error('socket closed before both sides ended'))
    settle()
  })

  let waitingForSocket = false
  let socketFull = false
  const fromStream = init.fromStream ?? passThrough
  const toSocket = (bytes: Uint8Array): void => {
    socketFull = !socket.write(bytes)
  }
  stream.addEventListener('message', (evt) => {
    const parts = evt.data instanceof Uint8Array ? [evt.data] : [...evt.data]
    socket.cork()
    try {
      for (const part of parts) fromStream(part, toSocket)
    } catch (err) {
      fail(err)
      return
    } finally {
      socket.uncork()
    }
    if (socketFull && !waitingForSocket) pauseUntilSocketDrains()
  })
  const pauseUntilSocketDrains = (): void => {
    waitingForSocket = true
    // Pausing synchronously inside a message that resume() dispatched would be undone by it; and
    // 'drain' (a nextTick) can come before this microtask, in which case there is nothing to pause.
    queueMicrotask(() => {
      if (waitingForSocket && stream.readStatus === 'readable') stream.pause()
    })
    socket.once('drain', () => {
      waitingForSocket = false
      if (stream.readStatus === 'paused') stream.resume()
    })
  }
  stream.addEventListener('remoteCloseWrite', () => (remoteClosedWrite = true))
  stream.addEventListener('end', () => socket.end())
  stream.addEventListener('close', (evt) => {
    streamClosed = true
    if (evt.error !== undefined) fail(evt.error)
    else if (!remoteClosedWrite) fail(new Error('stream cut before the remote closed it'))
    else if (!socket.writableEnded) socket.end()
    settle()
  })
  return promise
}

/** Resolves when the stream can take more data; rejects if it closes first. */
export function waitDrain(stream: Stream): Promise<void> {
  if (!stream.writableNeedsDrain) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const onDrain = (): void => {
      stream.removeEventListener('close', onClose)
      resolve()
    }
    const onClose = (evt: Event & { error?: Error }): void => {
      stream.removeEventListener('drain', onDrain)
      reject(evt.error ?? new Error('stream closed while waiting for drain'))
    }
    stream.addEventListener('drain', onDrain, { once: true })
    stream.addEventListener('close', onClose, { once: true })
  })
}
