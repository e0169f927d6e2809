import type { Stream } from '@libp2p/interface'

/** `StreamState.Established` of @libp2p/yamux 8 (pinned exactly in package.json). */
const YAMUX_ESTABLISHED = 3

interface YamuxInternals {
  sendWindowUpdate?: () => void
  state?: number
  recvWindow?: number
  recvWindowCapacity?: number
}

/**
 * @libp2p/yamux sends a window update after every data frame it receives: for a tunnel that is
 * one extra encrypted frame and one extra write per frame, in the opposite direction (about 10%
 * of the CPU of a bulk upload, and a frame per small RPC message). Like the Go implementation,
 * we send the update only once half the window is used; a sender is never blocked longer, since
 * it can only run out of window after we have used all of it. Streams of other muxers are left
 * as they are.
 */
export function halfWindowUpdates(stream: Stream): void {
  const internals = stream as unknown as YamuxInternals
  const original = internals.sendWindowUpdate
  if (typeof original !== 'function' || typeof internals.recvWindow !== 'number') return
  internals.sendWindowUpdate = function (this: YamuxInternals) {
    const capacity = this.recvWindowCapacity ?? 0
    const window = this.recvWindow ?? 0
    if (this.state === YAMUX_ESTABLISHED && capacity * 2 >= window) return
    original.call(this)
  }
}
