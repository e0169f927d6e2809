import type { Duplex } from 'node:stream'
import {
  COMMAND_SPECS,
  CONN_CAPS_SIZE,
  REQUEST_HEADER_SIZE,
  RPC_TENSOR_SIZE,
  RpcCommand,
  RpcRequestParser,
  SET_TENSOR_HEAD_SIZE,
  encodeResponse,
  type ExpectedResponse,
  type RpcRequestFrame
} from '@frankenstein-mesh/llama'
import { RpcIsolationError } from './errors.ts'
import { checkCommand, graphHeadSize, type BufferRange, type SessionScope } from './rpc-isolation.ts'

/** A session's last GRAPH_COMPUTE on one device, kept whole to restore rpc-server's stored graph. */
export interface StoredGraph {
  readonly frame: Uint8Array
  readonly buffers: ReadonlySet<bigint>
}

/** One whole command a session wants forwarded, or a reply the multiplexer gives itself. */
export type QueuedCommand =
  | {
      readonly kind: 'upstream'
      readonly command: RpcCommand
      readonly frame: Uint8Array
      readonly response: ExpectedResponse | null
      readonly onSent?: (() => void) | undefined
    }
  | {
      readonly kind: 'recompute'
      readonly device: number
      readonly frame: Uint8Array
      readonly graph: StoredGraph
    }
  | { readonly kind: 'local'; readonly reply: Uint8Array }

export interface MuxSessionInit {
  readonly id: number
  /** The pool the session works for: quotas and, later, compute shares are per pool. */
  readonly pool: string
  readonly label: string
  readonly socket: Duplex
  readonly deviceCount: number
  /** rpc-server's protocol version, which the multiplexer answers every HELLO with. */
  readonly version: { readonly major: number; readonly minor: number; readonly patch: number }
  readonly pieceSize: number
  readonly maxGraphBytes: number
  /** Called after something was queued: the multiplexer may forward it. */
  readonly onQueued: () => void
}

const P = REQUEST_HEADER_SIZE
const T = RPC_TENSOR_SIZE
/** Queued bytes past which the session's socket is paused, and below which it resumes. */
const HIGH_WATER = 8 * 1024 * 1024
const LOW_WATER = 2 * 1024 * 1024

/**
 * One client of the multiplexer (a llama-server's RPC connection). It parses and checks the
 * client's commands as they arrive and queues them whole; weight uploads are cut into SET_TENSOR
 * pieces of at most `pieceSize` bytes, so that no session holds the shared connection for long
 * and a stalled client never leaves half a command upstream.
 */
export class MuxSession implements SessionScope {
  readonly id: number
  readonly pool: string
  readonly label: string
  readonly socket: Duplex
  readonly deviceCount: number
  /** Bytes of the ALLOC_BUFFER forwarded and not answered yet (counted against the pool's quota). */
  reserved = 0
  /** Buffers the session may name now: its FREE_BUFFER removes one at once. */
  readonly buffers = new Map<bigint, BufferRange>()
  /** Buffers rpc-server holds for the session until their FREE_BUFFER has been sent: freed on close. */
  readonly held = new Map<bigint, bigint>()
  readonly graphs = new Map<number, StoredGraph>()
  readonly queue: QueuedCommand[] = []
  queuedBytes = 0
  /** A response-bearing command was forwarded and its whole reply has not been written back yet. */
  awaiting = false
  closed = false
  readonly counters = {
    commands: 0,
    requestBytes: 0,
    responseBytes: 0,
    uploadBytes: 0,
    graphRestores: 0,
    refusedAllocs: 0
  }
  private readonly init: MuxSessionInit
  private readonly parser: RpcRequestParser
  private upload: { piece: Buffer; fill: number; offset: bigint; left: number; head: Uint8Array } | null =
    null

  constructor(init: MuxSessionInit) {
    this.init = init
    this.id = init.id
    this.pool = init.pool
    this.label = init.label
    this.socket = init.socket
    this.deviceCount = init.deviceCount
    this.parser = new RpcRequestParser({
      headSize: (command, payloadSize) => this.headSize(command, payloadSize),
      onFrame: (frame) => this.onFrame(frame),
      onBody: (bytes) => this.onBody(bytes)
    })
  }

  /** Client bytes; throws RpcProtocolError or RpcIsolationError at the first bad command. */
  push(chunk: Uint8Array): void {
    this.counters.requestBytes += chunk.length
    this.parser.push(chunk)
    if (this.queuedBytes > HIGH_WATER) this.socket.pause()
  }

  /** The next queued command, taken by the multiplexer at a command boundary. */
  take(): QueuedCommand | undefined {
    const item = this.queue.shift()
    if (item === undefined) return undefined
    this.queuedBytes -= item.kind === 'local' ? item.reply.length : item.frame.length
    if (this.queuedBytes < LOW_WATER && this.socket.isPaused() && !this.closed) this.socket.resume()
    return item
  }

  get heldBytes(): number {
    let sum = 0n
    for (const size of this.held.values()) sum += size
    return Number(sum)
  }

  /** Ends the session's queue; what rpc-server still holds for it is the caller's to free. */
  close(): void {
    this.closed = true
    this.queue.length = 0
    this.queuedBytes = 0
    this.upload = null
    this.buffers.clear()
    this.graphs.clear()
  }

  private headSize(command: RpcCommand, payloadSize: number): number {
    if (command === RpcCommand.SetTensor) return SET_TENSOR_HEAD_SIZE
    // A graph is checked whole; one over the limit gets only its fixed part, then is refused.
    if (command === RpcCommand.GraphCompute) return graphHeadSize(payloadSize, this.init.maxGraphBytes)
    return 0
  }

  private onFrame(frame: RpcRequestFrame): void {
    this.counters.commands++
    const { command, bytes, payloadSize } = frame
    if (command === RpcCommand.GraphCompute && payloadSize > this.init.maxGraphBytes) {
      throw new RpcIsolationError(
        'ERR_MUX_GRAPH_TOO_LARGE',
        `GRAPH_COMPUTE of ${payloadSize} bytes is over the limit of ${this.init.maxGraphBytes}`
      )
    }
    const checked = checkCommand(command, bytes, payloadSize, this)
    switch (command) {
      case RpcCommand.Hello: {
        this.enqueue({ kind: 'local', reply: this.helloReply() })
        return
      }
      case RpcCommand.SetTensor: {
        this.startUpload(bytes, payloadSize)
        return
      }
      case RpcCommand.FreeBuffer: {
        this.free([...checked.buffers][0] ?? 0n, bytes)
        return
      }
      case RpcCommand.GraphCompute: {
        const graph = { frame: bytes.slice(), buffers: checked.buffers }
        this.graphs.set(checked.device ?? 0, graph)
        this.enqueue({ kind: 'upstream', command, frame: graph.frame, response: null })
        return
      }
      case RpcCommand.GraphRecompute: {
        this.recompute(checked.device ?? 0, bytes)
        return
      }
      default: {
        this.enqueue({
          kind: 'upstream',
          command,
          frame: bytes.slice(),
          response: expected(command, bytes)
        })
        return
      }
    }
  }

  private helloReply(): Uint8Array {
    const { major, minor, patch } = this.init.version
    const payload = new Uint8Array(4 + CONN_CAPS_SIZE)
    payload.set([major, minor, patch])
    return encodeResponse(payload)
  }

  private free(ptr: bigint, bytes: Uint8Array): void {
    this.buffers.delete(ptr)
    for (const [device, graph] of this.graphs) if (graph.buffers.has(ptr)) this.graphs.delete(device)
    this.enqueue({
      kind: 'upstream',
      command: RpcCommand.FreeBuffer,
      frame: bytes.slice(),
      response: null,
      onSent: () => this.held.delete(ptr)
    })
  }

  private recompute(device: number, bytes: Uint8Array): void {
    const graph = this.graphs.get(device)
    if (graph === undefined) {
      throw new RpcIsolationError(
        'ERR_MUX_NO_GRAPH',
        `GRAPH_RECOMPUTE on device ${device} before any GRAPH_COMPUTE`
      )
    }
    this.enqueue({ kind: 'recompute', device, frame: bytes.slice(), graph })
  }

  private startUpload(head: Uint8Array, payloadSize: number): void {
    const view = Buffer.from(head.buffer, head.byteOffset, head.byteLength)
    const left = payloadSize - SET_TENSOR_HEAD_SIZE
    this.upload = {
      piece: Buffer.alloc(0),
      fill: 0,
      offset: view.readBigUInt64LE(P + T),
      left,
      head: head.slice()
    }
    this.nextPiece()
    if (left === 0) this.finishPiece()
  }

  private nextPiece(): void {
    const up = this.upload as NonNullable<typeof this.upload>
    const size = Math.min(up.left, this.init.pieceSize)
    up.piece = Buffer.alloc(P + SET_TENSOR_HEAD_SIZE + size)
    up.piece.set(up.head.subarray(0, P + T))
    up.piece.writeBigUInt64LE(BigInt(SET_TENSOR_HEAD_SIZE + size), 1)
    up.piece.writeBigUInt64LE(up.offset, P + T)
    up.fill = 0
  }

  private onBody(bytes: Uint8Array): void {
    this.counters.uploadBytes += bytes.length
    let at = 0
    while (at < bytes.length) {
      const up = this.upload as NonNullable<typeof this.upload>
      const room = up.piece.length - P - SET_TENSOR_HEAD_SIZE - up.fill
      const n = Math.min(room, bytes.length - at)
      up.piece.set(bytes.subarray(at, at + n), P + SET_TENSOR_HEAD_SIZE + up.fill)
      up.fill += n
      at += n
      if (up.fill === up.piece.length - P - SET_TENSOR_HEAD_SIZE) this.finishPiece()
    }
  }

  private finishPiece(): void {
    const up = this.upload as NonNullable<typeof this.upload>
    this.enqueue({ kind: 'upstream', command: RpcCommand.SetTensor, frame: up.piece, response: null })
    up.left -= up.fill
    up.offset += BigInt(up.fill)
    if (up.left > 0) this.nextPiece()
    else this.upload = null
  }

  private enqueue(item: QueuedCommand): void {
    this.queue.push(item)
    this.queuedBytes += item.kind === 'local' ? item.reply.length : item.frame.length
    this.init.onQueued()
  }
}

function expected(command: RpcCommand, bytes: Uint8Array): ExpectedResponse | null {
  const response = COMMAND_SPECS[command]?.response ?? null
  if (response === null) return null
  if (response !== 'echo') return { command, size: response }
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  return { command, size: Number(view.readBigUInt64LE(P + T + 8)) }
}
