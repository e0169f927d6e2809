import { RpcCommand } from '@frankenstein-mesh/llama'

/** Compute time one forwarded command cost rpc-server, with what was charged for it at dispatch. */
export interface ComputeCharge {
  /** null: the multiplexer's own command. */
  readonly pool: string | null
  readonly ms: number
  readonly estimateMs: number
}

interface Sent {
  readonly pool: string | null
  readonly bytes: number
  readonly graph: boolean
  readonly estimateMs: number
  readonly at: number
  readonly replies: boolean
}

/** Upload speed assumed for SET_TENSOR until measured otherwise: 2 GB/s. */
const MS_PER_BYTE = 1 / 2e6
const SMALL_MS = 0.02
const FIRST_GRAPH_MS = 1
const LEARN = 0.2

/**
 * Measures how long rpc-server works on each forwarded command. rpc-server runs commands one at a
 * time in the order sent, and only some have a reply: at each reply, the time since rpc-server
 * could start on the oldest unmeasured command (its forwarding, or the previous reply if later)
 * is shared among the commands sent up to the replied one, in proportion to their estimates.
 * Graph estimates are learnt per pool from the batches that hold one graph.
 */
export class ComputeMeter {
  private readonly sent: Sent[] = []
  private readonly graphMs = new Map<string | null, number>()
  private lastReply = -Infinity
  /** Request bytes forwarded whose time is not measured yet: queued in sockets or in rpc-server. */
  unmeasuredBytes = 0

  /** Records a command forwarded at `at` (ms) and returns its estimated cost. */
  forwarded(pool: string | null, command: number, bytes: number, replies: boolean, at: number): number {
    const graph = command === RpcCommand.GraphCompute || command === RpcCommand.GraphRecompute
    const estimateMs = graph
      ? (this.graphMs.get(pool) ?? FIRST_GRAPH_MS)
      : command === RpcCommand.SetTensor
        ? SMALL_MS + bytes * MS_PER_BYTE
        : SMALL_MS
    this.sent.push({ pool, bytes, graph, estimateMs, at, replies })
    this.unmeasuredBytes += bytes
    return estimateMs
  }

  /** A reply arrived at `at`: the charges of the commands it closes. */
  replied(at: number): ComputeCharge[] {
    const end = this.sent.findIndex((s) => s.replies)
    if (end < 0) return []
    const batch = this.sent.splice(0, end + 1)
    for (const s of batch) this.unmeasuredBytes -= s.bytes
    const start = Math.max(this.lastReply, (batch[0] as Sent).at)
    this.lastReply = at
    const busy = Math.max(0, at - start)
    const total = batch.reduce((sum, s) => sum + s.estimateMs, 0)
    this.learn(batch, busy, total)
    return batch.map((s) => ({
      pool: s.pool,
      ms: total > 0 ? (busy * s.estimateMs) / total : busy / batch.length,
      estimateMs: s.estimateMs
    }))
  }

  /** True when commands without a reply were sent last: only a later reply tells their time. */
  get unmeasured(): boolean {
    return this.sent.length > 0 && this.sent.at(-1)?.replies === false
  }

  private learn(batch: readonly Sent[], busy: number, total: number): void {
    const graphs = batch.filter((s) => s.graph)
    const graph = graphs[0]
    if (graphs.length !== 1 || graph === undefined) return
    const own = busy - (total - graph.estimateMs)
    if (own <= 0) return
    const old = this.graphMs.get(graph.pool) ?? own
    this.graphMs.set(graph.pool, old + LEARN * (own - old))
  }
}
