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
import type { Gate } from './bridge.ts'

/** Counters of one RPC connection, as a tunnel end saw them. */
export interface RpcTraffic {
  /** Bytes llama-server sent towards rpc-server, and back. */
  readonly requestBytes: number
  readonly responseBytes: number
  /** Commands by name, e.g. `{ SET_TENSOR: 120, GRAPH_RECOMPUTE: 33 }`. */
  readonly commands: Readonly<Record<string, number>>
  /** Weight and input bytes carried by SET_TENSOR. */
  readonly uploadBytes: number
  /** GRAPH_COMPUTE and GRAPH_RECOMPUTE commands, and the time from each to the next response. */
  readonly computes: number
  readonly computeMs: number
}

/**
 * The gate of one RPC connection: both directions pass through the RPC parsers, and only what
 * they have validated goes on (a header is held back until it is whole and checked). It counts
 * commands and bytes, and zeroes the HELLO transport capabilities both ways so that llama-server
 * and rpc-server never negotiate a transport (RDMA) that would bypass the tunnel. A protocol
 * violation throws, which ends the bridge that called it before the bad frame goes anywhere.
 */
export class RpcGate {
  private readonly counts = new Uint32Array(COMMAND_COUNT)
  private requestBytes = 0
  private responseBytes = 0
  private uploadBytes = 0
  private computes = 0
  private computeMs = 0
  /** When the oldest compute not yet followed by a response was forwarded. */
  private computeStarted: number | undefined
  private readonly requests: RpcRequestParser
  private readonly responses: RpcResponseParser
  private forwardRequest: (bytes: Uint8Array) => void = () => {}
  private forwardResponse: (bytes: Uint8Array) => void = () => {}

  constructor() {
    const pending = new PendingResponses()
    this.requests = new RpcRequestParser({
      pending,
      onFrame: (frame) => {
        this.counts[frame.command] = (this.counts[frame.command] ?? 0) + 1
        if (frame.command === RpcCommand.Hello) frame.bytes.fill(0, REQUEST_HEADER_SIZE)
        if (frame.command === RpcCommand.GraphCompute || frame.command === RpcCommand.GraphRecompute) {
          this.computes++
          this.computeStarted ??= performance.now()
        }
        this.forwardRequest(frame.bytes)
      },
      onBody: (bytes) => {
        this.uploadBytes += bytes.length
        this.forwardRequest(bytes)
      }
    })
    this.responses = new RpcResponseParser({
      pending,
      onFrame: (frame) => {
        // HELLO reply: major, minor, patch, padding, then the caps.
        if (frame.command === RpcCommand.Hello) frame.bytes.fill(0, RESPONSE_HEADER_SIZE + 4)
        // Computes have no reply: the next reply (the activations' GET_TENSOR) tells they are done.
        if (this.computeStarted !== undefined) {
          this.computeMs += performance.now() - this.computeStarted
          this.computeStarted = undefined
        }
        this.forwardResponse(frame.bytes)
      },
      onBody: (bytes) => this.forwardResponse(bytes)
    })
  }

  /** Gate for what llama-server sends towards rpc-server. */
  readonly request: Gate = (chunk, forward) => {
    this.requestBytes += chunk.length
    this.forwardRequest = forward
    this.requests.push(chunk)
  }

  /** Gate for what rpc-server sends back. */
  readonly response: Gate = (chunk, forward) => {
    this.responseBytes += chunk.length
    this.forwardResponse = forward
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
      uploadBytes: this.uploadBytes,
      computes: this.computes,
      computeMs: this.computeMs
    }
  }
}
