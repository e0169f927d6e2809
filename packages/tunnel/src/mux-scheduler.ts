/** What a scheduler sees of a session waiting to forward a command. */
export interface MuxSessionView {
  readonly id: number
  readonly label: string
  /** Bytes the session has queued, whole commands. */
  readonly queuedBytes: number
}

/**
 * Decides, at every command boundary, whose next command goes to rpc-server. The place for
 * weighted fair queuing between pools: `pick` sees only sessions that have a command ready.
 */
export interface MuxScheduler {
  pick<S extends MuxSessionView>(ready: readonly S[]): S
}

/** Takes sessions in turn, one command each. */
export function roundRobin(): MuxScheduler {
  let last = 0
  return {
    pick<S extends MuxSessionView>(ready: readonly S[]): S {
      const next = ready.find((s) => s.id > last) ?? ready[0]
      if (next === undefined) throw new RangeError('no session is ready')
      last = next.id
      return next
    }
  }
}
