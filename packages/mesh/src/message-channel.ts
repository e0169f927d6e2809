import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { decodeMessage, encodeMessage } from '@frankenstein-mesh/protocol'
import type { z } from 'zod'

export interface MessageChannel<In> {
  send(message: unknown): Promise<void>
  /** The next validated message; rejects when the stream ends or a message is invalid. */
  receive(signal?: AbortSignal): Promise<In>
  readonly stream: Stream
  close(): Promise<void>
  abort(err: Error): void
}

/**
 * A long-lived conversation on one stream: length-prefixed JSON messages, each bounded in size
 * before it is parsed and validated against `schema` after.
 */
export function messageChannel<T extends z.ZodType>(
  stream: Stream,
  schema: T,
  maxBytes: number
): MessageChannel<z.infer<T>> {
  const lp = lpStream(stream, { maxDataLength: maxBytes })
  return {
    stream,
    send: async (message) => {
      await lp.write(encodeMessage(message, maxBytes))
    },
    receive: async (signal) =>
      decodeMessage(schema, (await lp.read(signal === undefined ? {} : { signal })).subarray(), maxBytes),
    close: async () => {
      await stream.close().catch((err: unknown) => stream.abort(err as Error))
    },
    abort: (err) => stream.abort(err)
  }
}
