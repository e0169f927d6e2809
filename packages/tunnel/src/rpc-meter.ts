import {
  COMMAND_COUNT,
  PendingResponses,
  REQUEST_HEADER_SIZE,
  RESPONSE_HEADER_SIZE,
  RpcCommand,
  RpcRequestParser,
  RpcResponseParser,
  commandName
} from '@frankenstein-mesh/llama'

/** Counters of one RPC connection, as a tunnel end saw them. */
export interface RpcTraffic {
  /** Bytes llama-server sent towards rpc-server, and back. */
  readonly requestBytes: number
  readonly responseBytes: number
  /** Commands by name, e.g. `{ SET_TENSOR: 120, GRAPH_RECOMPUTE: 33 }`. */
  readonly commands: Readonly<Record<string, number>>
  /** Weight and input bytes carried by SET_TENSOR. */
  readonly uploadBytes: number
}

/**
 * Runs the RPC parsers over both directions of one connection: it counts commands and bytes,
 * and zeroes the HELLO transport capabilities both ways so that llama-server and rpc-server never
 * negotiate a transport (RDMA) that would bypass the tunnel. A protocol violation throws, which
 * ends the bridge that called it.
 */
export class RpcMeter {
  private readonly counts = new Uint32Array(COMMAND_COUNT)
  private requestBytes = 0
  private responseBytes = 0
  private uploadBytes = 0
  private readonly requests: RpcRequestParser
  private readonly responses: RpcResponseParser

  constructor() {
    const pending = new PendingResponses()
    this.requests = new RpcRequestParser({
      pending,
      onFrame: (frame) => {
        this.counts[frame.command] = (this.counts[frame.command] ?? 0) + 1
        if (frame.command === RpcCommand.Hello) frame.bytes.fill(0, REQUEST_HEADER_SIZE)
      },
      onBody: (bytes) => {
        this.uploadBytes += bytes.length
      }
    })
    this.responses = new RpcResponseParser({
      pending,
      onFrame: (frame) => {
        // HELLO reply: major, minor, patch, padding, then the caps.
        if (frame.command === RpcCommand.Hello) frame.bytes.fill(0, RESPONSE_HEADER_SIZE + 4)
      }
    })
  }

  /** Feed every chunk llama-server sends, before it is forwarded. */
  readonly request = (chunk: Uint8Array): void => {
    this.requestBytes += chunk.length
    this.requests.push(chunk)
  }

  /** Feed every chunk rpc-server sends, before it is forwarded. */
  readonly response = (chunk: Uint8Array): void => {
    this.responseBytes += chunk.length
    this.responses.push(chunk)
  }

  snapshot(): RpcTraffic {
    const commands: Record<string, number> = {}
    this.counts.forEach((count, command) => {
      if (count > 0) commands[commandName(command)] = count
    })
    return {
      requestBytes: this.requestBytes,
      responseBytes: this.responseBytes,
      commands,
      uploadBytes: this.uploadBytes
    }
  }
}
