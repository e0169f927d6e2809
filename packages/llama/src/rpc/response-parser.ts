import { RpcProtocolError } from '../errors.ts'
import { ByteFrames, readU64 } from './byte-frames.ts'
import type { PendingResponses } from './pending-responses.ts'
import { RESPONSE_HEADER_SIZE, RpcCommand, commandName } from './protocol.ts'

/** One server-to-client response, matched to the command that asked for it. */
export interface RpcResponseFrame {
  readonly command: RpcCommand
  readonly payloadSize: number
  /** `header | payload` for fixed-size responses; just the header for GET_TENSOR's data. */
  readonly bytes: Uint8Array
}

export interface RpcResponseParserInit {
  /** Filled by the RpcRequestParser of the same connection. */
  readonly pending: PendingResponses
  readonly onFrame: (frame: RpcResponseFrame) => void
  readonly onBody?: ((bytes: Uint8Array) => void) | undefined
}

/**
 * Streaming parser for the server-to-client direction. Each response is matched, in order, to
 * the oldest command still owed one; a response nobody asked for or of the wrong size throws.
 */
export class RpcResponseParser {
  private readonly frames: ByteFrames

  constructor(init: RpcResponseParserInit) {
    const onBody = init.onBody ?? (() => {})
    let command: RpcCommand = RpcCommand.Hello
    this.frames = new ByteFrames({
      headerSize: RESPONSE_HEADER_SIZE,
      readHeader: (header) => {
        const expected = init.pending.shift()
        const payloadSize = readU64(header, 0)
        if (expected === undefined) {
          throw new RpcProtocolError(
            'ERR_RPC_UNEXPECTED_RESPONSE',
            `response of ${payloadSize} bytes to no command`
          )
        }
        if (payloadSize !== expected.size) {
          throw new RpcProtocolError(
            'ERR_RPC_BAD_RESPONSE_SIZE',
            `${commandName(expected.command)} response of ${payloadSize} bytes, expected ${expected.size}`
          )
        }
        command = expected.command
        return { payloadSize, headSize: command === RpcCommand.GetTensor ? 0 : payloadSize }
      },
      onFrame: (bytes, payloadSize) => {
        init.onFrame({ command, payloadSize, bytes })
      },
      onBody
    })
  }

  get atBoundary(): boolean {
    return this.frames.atBoundary
  }

  /** Parses a chunk; throws RpcProtocolError at the first violation, and again on every later push. */
  push(chunk: Uint8Array): void {
    this.frames.push(chunk)
  }
}
