import {
  COMMAND_COUNT,
  PendingResponses,
  REQUEST_HEADER_SIZE,
  RESPONSE_HEADER_SIZE,
  RpcCommand,
  RpcRequestParser,
  RpcResponseParser,
  commandName,
  defaultHeadSize
} from '@frankenstein-mesh/llama'
import type { Gate } from './bridge.ts'
import { RpcGateError, RpcIsolationError } from './errors.ts'
import { MAX_GRAPH_BYTES, checkGraphStructure, graphHeadSize } from './rpc-isolation.ts'

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
  /** Buffer bytes rpc-server holds for this connection now (ALLOC_BUFFER minus FREE_BUFFER). */
  readonly heldBytes: number
  /** Those bytes integrated over time, until now or until the connection ended (which frees them). */
  readonly memoryGiBs: number
}

/** Several connections' counters added up, without the per-command breakdown. */
export interface TrafficTotals extends Omit<RpcTraffic, 'commands'> {
  /** How many connections were added. */
  readonly connections: number
}

export const NO_TRAFFIC: TrafficTotals = {
  connections: 0,
  requestBytes: 0,
  responseBytes: 0,
  uploadBytes: 0,
  computes: 0,
  computeMs: 0,
  heldBytes: 0,
  memoryGiBs: 0
}

/** `total` with one more connection's counters: a reducer over `RpcTraffic[]`. */
export function addTraffic(total: TrafficTotals, one: RpcTraffic): TrafficTotals {
  return {
    connections: total.connections + 1,
    requestBytes: total.requestBytes + one.requestBytes,
    responseBytes: total.responseBytes + one.responseBytes,
    uploadBytes: total.uploadBytes + one.uploadBytes,
    computes: total.computes + one.computes,
    computeMs: total.computeMs + one.computeMs,
    heldBytes: total.heldBytes + one.heldBytes,
    memoryGiBs: total.memoryGiBs + one.memoryGiBs
  }
}

const GiB = 1024 ** 3

/**
 * The gate of one RPC connection: both directions pass through the RPC parsers, and only what
 * they have validated goes on (a header is held back until it is whole and checked). It counts
 * commands and bytes, and zeroes the HELLO transport capabilities both ways so that llama-server
 * and rpc-server never negotiate a transport (RDMA) that would bypass the tunnel. A graph goes on
 * only once its structure is checked (checkGraphStructure: rpc-server dereferences a node's
 * sources unchecked). A protocol violation throws, which ends the bridge that called it before
 * the bad frame goes anywhere.
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
  /** Server buffers this connection allocated, by remote pointer. */
  private readonly buffers = new Map<bigint, number>()
  private heldBytes = 0
  private heldByteMs = 0
  private heldSince = performance.now()
  private ended = false
  private readonly requests: RpcRequestParser
  private readonly responses: RpcResponseParser
  private forwardRequest: (bytes: Uint8Array) => void = () => {}
  private forwardResponse: (bytes: Uint8Array) => void = () => {}

  /**
   * `checkGraphs`: hold each GRAPH_COMPUTE whole and check its structure before it goes on (where
   * it goes to rpc-server unchecked otherwise: the agent's end of an exclusive lease). Off, graphs
   * stream through like any payload.
   */
  constructor(options: { readonly checkGraphs?: boolean } = {}) {
    const checkGraphs = options.checkGraphs === true
    const pending = new PendingResponses()
    /** Whether the body now streaming is SET_TENSOR's data (a graph's streams too, unchecked). */
    let uploading = false
    this.requests = new RpcRequestParser({
      pending,
      // A graph is checked whole; one over the limit gets only its fixed part, then is refused.
      headSize: (command, payloadSize) =>
        checkGraphs && command === RpcCommand.GraphCompute
          ? graphHeadSize(payloadSize, MAX_GRAPH_BYTES)
          : defaultHeadSize(command),
      onFrame: (frame) => {
        if (checkGraphs && frame.command === RpcCommand.GraphCompute)
          checkGraph(frame.bytes, frame.payloadSize)
        this.counts[frame.command] = (this.counts[frame.command] ?? 0) + 1
        uploading = frame.command === RpcCommand.SetTensor
        if (frame.command === RpcCommand.Hello) frame.bytes.fill(0, REQUEST_HEADER_SIZE)
        if (frame.command === RpcCommand.FreeBuffer) this.hold(-(this.takeBuffer(frame.bytes) ?? 0))
        if (frame.command === RpcCommand.GraphCompute || frame.command === RpcCommand.GraphRecompute) {
          this.computes++
          this.computeStarted ??= performance.now()
        }
        this.forwardRequest(frame.bytes)
      },
      onBody: (bytes) => {
        if (uploading) this.uploadBytes += bytes.length
        this.forwardRequest(bytes)
      }
    })
    this.responses = new RpcResponseParser({
      pending,
      onFrame: (frame) => {
        // HELLO reply: major, minor, patch, padding, then the caps.
        if (frame.command === RpcCommand.Hello) frame.bytes.fill(0, RESPONSE_HEADER_SIZE + 4)
        if (frame.command === RpcCommand.AllocBuffer) this.noteBuffer(frame.bytes)
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

  /** The connection is over: rpc-server has freed its buffers, so holding stops counting. */
  end(): void {
    if (this.ended) return
    this.hold(-this.heldBytes)
    this.ended = true
  }

  private hold(bytes: number): void {
    if (this.ended) return
    const now = performance.now()
    this.heldByteMs += this.heldBytes * (now - this.heldSince)
    this.heldSince = now
    this.heldBytes = Math.max(0, this.heldBytes + bytes)
  }

  /** ALLOC_BUFFER's reply: `size | remote_ptr | remote_size`. A null pointer is a failed allocation. */
  private noteBuffer(bytes: Uint8Array): void {
    const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    const ptr = view.readBigUInt64LE(RESPONSE_HEADER_SIZE)
    const size = Number(view.readBigUInt64LE(RESPONSE_HEADER_SIZE + 8))
    if (ptr === 0n || this.buffers.has(ptr)) return
    this.buffers.set(ptr, size)
    this.hold(size)
  }

  /** FREE_BUFFER's request: `command | size | remote_ptr`. */
  private takeBuffer(bytes: Uint8Array): number | undefined {
    const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    const ptr = view.readBigUInt64LE(REQUEST_HEADER_SIZE)
    const size = this.buffers.get(ptr)
    this.buffers.delete(ptr)
    return size
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
      computeMs: this.computeMs,
      heldBytes: this.heldBytes,
      memoryGiBs:
        (this.heldByteMs + (this.ended ? 0 : this.heldBytes * (performance.now() - this.heldSince))) /
        1000 /
        GiB
    }
  }
}

function checkGraph(frame: Uint8Array, payloadSize: number): void {
  if (payloadSize > MAX_GRAPH_BYTES) {
    throw new RpcGateError(
      'ERR_RPC_GRAPH_TOO_LARGE',
      `GRAPH_COMPUTE of ${payloadSize} bytes is over the limit of ${MAX_GRAPH_BYTES}`
    )
  }
  try {
    checkGraphStructure(frame.subarray(REQUEST_HEADER_SIZE))
  } catch (err) {
    if (!(err instanceof RpcIsolationError)) throw err
    throw new RpcGateError('ERR_RPC_BAD_GRAPH', err.message, { cause: err })
  }
}
