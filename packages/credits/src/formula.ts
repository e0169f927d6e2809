import type { Figures } from '@frankenstein-mesh/protocol'

/**
 * The credit formula: one credit is one GiB of a worker's memory held by a pool for one hour, or
 * one minute of its compute, or ten GiB loaded into it. It uses only what both ends of the RPC
 * streams count, with constants that never depend on the pool, so a worker earns the same for the
 * same work whichever pool measured it (BOINC's cobblestone plays this role there).
 *
 *   credit = memoryGiBs / 3600 + computeMs / 60 000 + loadedBytes / (10 * 2^30)
 *
 * Memory dominates a slice that holds a large model while idle; compute dominates a busy one;
 * the load term pays for the bandwidth and wear of moving weights in.
 */
export const CREDIT = {
  memoryGiBsPerCredit: 3600,
  computeMsPerCredit: 60_000,
  loadedBytesPerCredit: 10 * 2 ** 30
} as const

export function creditFor(figures: Figures): number {
  const credit =
    figures.memoryGiBs / CREDIT.memoryGiBsPerCredit +
    figures.computeMs / CREDIT.computeMsPerCredit +
    figures.loadedBytes / CREDIT.loadedBytesPerCredit
  // Rounded to a millionth: the same figures give the same number on every machine.
  return Math.round(credit * 1e6) / 1e6
}

/** The part of a lease's totals since the previous receipt. */
export function deltaOf(total: Figures, previous: Figures | undefined): Figures {
  if (previous === undefined) return total
  return {
    memoryGiBs: Math.max(0, total.memoryGiBs - previous.memoryGiBs),
    computeMs: Math.max(0, total.computeMs - previous.computeMs),
    loadedBytes: Math.max(0, total.loadedBytes - previous.loadedBytes),
    computes: Math.max(0, total.computes - previous.computes)
  }
}

/** How far the orchestrator lets a worker's totals be from its own before it disputes them. */
export const TOLERANCE = {
  /** Both ends see the same ALLOC/FREE frames; they differ by when each saw them. */
  memory: { relative: 0.05, absoluteGiBs: 2 },
  /** The orchestrator's compute time includes the network, so the worker's should be at most it. */
  compute: { relative: 0.05, absoluteMs: 500 },
  /** The same SET_TENSOR bytes; a period boundary can split one in flight. */
  loaded: { relative: 0.01, absoluteBytes: 64 * 2 ** 20 }
} as const

/** Why a worker's claimed totals are not countersigned, or undefined when they are within tolerance. */
export function disputeOf(claimed: Figures, measured: Figures): string | undefined {
  const over = (claim: number, ours: number, relative: number, absolute: number) =>
    claim > ours * (1 + relative) + absolute
  if (over(claimed.memoryGiBs, measured.memoryGiBs, TOLERANCE.memory.relative, TOLERANCE.memory.absoluteGiBs))
    return `memory ${claimed.memoryGiBs.toFixed(1)} GiB-s claimed, ${measured.memoryGiBs.toFixed(1)} measured`
  if (over(claimed.computeMs, measured.computeMs, TOLERANCE.compute.relative, TOLERANCE.compute.absoluteMs))
    return `compute ${Math.round(claimed.computeMs)} ms claimed, ${Math.round(measured.computeMs)} measured`
  if (
    over(claimed.loadedBytes, measured.loadedBytes, TOLERANCE.loaded.relative, TOLERANCE.loaded.absoluteBytes)
  )
    return `loaded ${claimed.loadedBytes} bytes claimed, ${measured.loadedBytes} measured`
  return undefined
}

/** The counters a tunnel end keeps per RPC connection (RpcTraffic), as far as credit needs them. */
export interface MeteredConnection {
  readonly memoryGiBs: number
  readonly computeMs: number
  readonly uploadBytes: number
  readonly computes: number
}

export const NO_FIGURES: Figures = { memoryGiBs: 0, computeMs: 0, loadedBytes: 0, computes: 0 }

export function figuresOf(connections: readonly MeteredConnection[]): Figures {
  return connections.reduce<Figures>(
    (sum, c) => ({
      memoryGiBs: sum.memoryGiBs + c.memoryGiBs,
      computeMs: sum.computeMs + c.computeMs,
      loadedBytes: sum.loadedBytes + c.uploadBytes,
      computes: sum.computes + c.computes
    }),
    NO_FIGURES
  )
}
