import { RpcProtocolError } from '../errors.ts'
import { ByteFrames, readU64 } from './byte-frames.ts'
import type { PendingResponses } from './pending-responses.ts'
import {
  COMMAND_COUNT,
  COMMAND_SPECS,
  GET_TENSOR_SIZE_OFFSET,
  REQUEST_HEADER_SIZE,
  RpcCommand,
  SET_TENSOR_HEAD_SIZE,
  commandName
} from './protocol.ts'

/** One client-to-server command, seen once its header and payload head have arrived. */
export interface RpcRequestFrame {
  readonly command: RpcCommand
  readonly payloadSize: number
  /** `header | head`, contiguous: the whole payload for fixed-size commands. Rewritable in place. */
  readonly bytes: Uint8Array
}

export interface RpcRequestParserInit {
  /** Largest payload accepted for the variable-size commands (SET_TENSOR, GRAPH_COMPUTE). */
  readonly maxPayloadSize?: number | undefined
  /** How much of a variable-size payload to hand over whole in `bytes`; the rest streams to onBody. */
  readonly headSize?: ((command: RpcCommand, payloadSize: number) => number) | undefined
  /** Where response-bearing commands leave what the response parser should expect. */
  readonly pending?: PendingResponses | undefined
  readonly onFrame: (frame: RpcRequestFrame) => void
  readonly onBody?: ((bytes: Uint8Array) => void) | undefined
}

/** 4 GiB: larger than any single tensor llama.cpp sends in one SET_TENSOR in practice. */
export const DEFAULT_MAX_PAYLOAD_SIZE = 4 * 1024 ** 3

/** By default the weights of SET_TENSOR and the whole of GRAPH_COMPUTE stream through unbuffered. */
export function defaultHeadSize(command: RpcCommand): number {
  return command === RpcCommand.SetTensor ? SET_TENSOR_HEAD_SIZE : 0
}

/**
 * Streaming parser for the client-to-server direction. Validates framing as it goes (HELLO
 * first and only once, known commands, exact sizes for fixed-size commands, a size cap for the
 * others) and throws RpcProtocolError at the first violation; the parser is unusable after that.
 */
export class RpcRequestParser {
  private readonly frames: ByteFrames
  private readonly maxPayloadSize: number
  private readonly headSize: (command: RpcCommand, payloadSize: number) => number
  private readonly pending: PendingResponses | undefined
  private helloSeen = false

  constructor(init: RpcRequestParserInit) {
    this.maxPayloadSize = init.maxPayloadSize ?? DEFAULT_MAX_PAYLOAD_SIZE
    this.headSize = init.headSize ?? defaultHeadSize
    this.pending = init.pending
    const onBody = init.onBody ?? (() => {})
    let command: RpcCommand = RpcCommand.Hello
    this.frames = new ByteFrames({
      headerSize: REQUEST_HEADER_SIZE,
      readHeader: (header) => {
        command = this.validateHeader(header)
        const payloadSize = readU64(header, 1)
        return { payloadSize, headSize: this.headLength(command, payloadSize) }
      },
      onFrame: (bytes, payloadSize) => {
        this.expectResponse(command, bytes)
        init.onFrame({ command, payloadSize, bytes })
      },
      onBody
    })
  }

  /** True between commands: the client may close here without cutting a frame. */
  get atBoundary(): boolean {
    return this.frames.atBoundary
  }

  /** Parses a chunk; throws RpcProtocolError at the first violation, and again on every later push. */
  push(chunk: Uint8Array): void {
    this.frames.push(chunk)
  }

  private validateHeader(header: Uint8Array): RpcCommand {
    const command = header[0] as number
    const payloadSize = readU64(header, 1)
    const spec = COMMAND_SPECS[command]
    if (spec === undefined || command >= COMMAND_COUNT) {
      throw new RpcProtocolError('ERR_RPC_UNKNOWN_COMMAND', `unknown RPC command ${command}`)
    }
    if (!this.helloSeen && command !== RpcCommand.Hello) {
      throw new RpcProtocolError(
        'ERR_RPC_HELLO_EXPECTED',
        `first RPC command must be HELLO, got ${spec.name}`
      )
    }
    if (this.helloSeen && command === RpcCommand.Hello) {
      throw new RpcProtocolError('ERR_RPC_UNEXPECTED_HELLO', 'HELLO sent twice on one connection')
    }
    this.helloSeen = true
    if (spec.variable ? payloadSize < spec.request : payloadSize !== spec.request) {
      throw new RpcProtocolError(
        'ERR_RPC_BAD_SIZE',
        `${spec.name} payload of ${payloadSize} bytes, expected ${spec.variable ? 'at least ' : ''}${spec.request}`
      )
    }
    if (payloadSize > this.maxPayloadSize) {
      throw new RpcProtocolError(
        'ERR_RPC_FRAME_TOO_LARGE',
        `${spec.name} payload of ${payloadSize} bytes exceeds the limit of ${this.maxPayloadSize}`
      )
    }
    return command as RpcCommand
  }

  private headLength(command: RpcCommand, payloadSize: number): number {
    const spec = COMMAND_SPECS[command] as (typeof COMMAND_SPECS)[number]
    if (!spec.variable) return payloadSize
    return Math.min(payloadSize, Math.max(spec.request, this.headSize(command, payloadSize)))
  }

  private expectResponse(command: RpcCommand, bytes: Uint8Array): void {
    const response = (COMMAND_SPECS[command] as (typeof COMMAND_SPECS)[number]).response
    if (response === null || this.pending === undefined) return
    const size = response === 'echo' ? readU64(bytes, REQUEST_HEADER_SIZE + GET_TENSOR_SIZE_OFFSET) : response
    if (size > this.maxPayloadSize) {
      throw new RpcProtocolError(
        'ERR_RPC_FRAME_TOO_LARGE',
        `${commandName(command)} asks for ${size} bytes, over the limit of ${this.maxPayloadSize}`
      )
    }
    this.pending.push({ command, size })
  }
}
