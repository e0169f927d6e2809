import type { AbortOptions, Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { MessageError, decodeMessage, encodeMessage } from '@frankenstein-mesh/protocol'
import type { z } from 'zod'

export interface ControlOptions {
  /** Bytes a single message may take; checked before parsing. */
  readonly maxBytes: number
  readonly timeoutMs?: number | undefined
  readonly signal?: AbortSignal | undefined
}

/** Writes one length-prefixed JSON message and reads one back, validated. */
export async function exchange<T extends z.ZodType>(
  stream: Stream,
  message: unknown,
  schema: T,
  options: ControlOptions
): Promise<z.infer<T>> {
  const lp = lpStream(stream, { maxDataLength: options.maxBytes })
  const abort = abortOptions(options)
  await lp.write(encodeMessage(message, options.maxBytes), abort)
  return decodeMessage(schema, (await lp.read(abort)).subarray(), options.maxBytes)
}

/** Opens `protocol` on `peer`, sends one request, returns its validated response. */
export async function request<T extends z.ZodType>(
  node: Libp2p,
  peer: PeerId,
  protocol: string,
  message: unknown,
  schema: T,
  options: ControlOptions
): Promise<z.infer<T>> {
  const abort = abortOptions(options)
  const stream = await node.dialProtocol(peer, protocol, { ...abort, runOnLimitedConnection: true })
  try {
    const response = await exchange(stream, message, schema, options)
    await stream.close(abort)
    return response
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    throw err
  }
}

/**
 * Serves `protocol` as one request and one response per stream. Invalid or oversized requests
 * get the stream reset; the handler answers undefined to refuse without a reply.
 */
export async function serveRequests<T extends z.ZodType>(
  node: Libp2p,
  protocol: string,
  schema: T,
  handler: (request: z.infer<T>, connection: Connection) => unknown,
  options: ControlOptions
): Promise<void> {
  await node.handle(
    protocol,
    async (stream, connection) => {
      const lp = lpStream(stream, { maxDataLength: options.maxBytes })
      const abort = abortOptions(options)
      try {
        const req = decodeMessage(schema, (await lp.read(abort)).subarray(), options.maxBytes)
        const response = await handler(req, connection)
        if (response === undefined) throw new MessageError('ERR_REFUSED', 'request refused')
        await lp.write(encodeMessage(response, options.maxBytes), abort)
        await stream.close(abort)
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      }
    },
    { runOnLimitedConnection: true, maxInboundStreams: 16 }
  )
}

function abortOptions(options: ControlOptions): AbortOptions {
  const signals = [AbortSignal.timeout(options.timeoutMs ?? 5_000)]
  if (options.signal !== undefined) signals.push(options.signal)
  return { signal: AbortSignal.any(signals) }
}
