/**
 * Placement: which workers hold the model, in what order, with what `--tensor-split`. Pure.
 *
 * Every worker in a plan costs one round trip per generated token (llama.cpp visits each RPC
 * server in turn, with the orchestrator as the hub), so a plan uses the fewest workers that hold
 * the model with headroom, and among plans of that size the one with the lowest total RTT.
 */
import { layerDevices, type ModelLayout } from '@frankenstein-mesh/llama'

export interface Candidate {
  readonly id: string
  /** Memory the worker lends (its advert), in bytes. */
  readonly offeredBytes: number
  /** Measured round trip to it; unknown counts as slow. */
  readonly rttMs?: number | undefined
}

export interface PlacementInit {
  readonly layout: ModelLayout
  /** KV cache is sized for this many tokens (context × parallel slots). */
  readonly contextTokens: number
  /** Per worker, bytes kept free for llama.cpp's compute buffers and slack. */
  readonly reserveBytes?: number | undefined
  /** Fraction of each worker's memory left unused on top (0.1 = plans use at most 90%). */
  readonly headroom?: number | undefined
  /** Enumerating subsets stops here; larger pools fall back to a greedy choice. */
  readonly maxSubsets?: number | undefined
}

export interface PlannedWorker {
  readonly id: string
  /** First and last repeating layer it holds; null when it holds only the output. */
  readonly layers: readonly [number, number] | null
  readonly holdsOutput: boolean
  /** Weights plus KV cache placed on it. */
  readonly bytes: number
  readonly capacityBytes: number
}

export interface Plan {
  readonly workers: readonly PlannedWorker[]
  /** For llama-server's `--tensor-split`, same order as `workers`. */
  readonly tensorSplit: readonly number[]
  readonly totalRttMs: number
}

export type PlacementResult =
  { readonly ok: true; readonly plan: Plan } | { readonly ok: false; readonly reason: string }

const UNKNOWN_RTT_MS = 1_000

export function planPlacement(candidates: readonly Candidate[], init: PlacementInit): PlacementResult {
  const reserve = init.reserveBytes ?? 32 * 1024 ** 2
  const headroom = init.headroom ?? 0.1
  const capacity = (c: Candidate): number =>
    Math.max(0, Math.floor(c.offeredBytes * (1 - headroom)) - reserve)
  const usable = candidates.filter((c) => capacity(c) > 0)
  const needed = placedBytes(init.layout, init.contextTokens)
  const available = usable.reduce((sum, c) => sum + capacity(c), 0)
  if (available < needed) {
    return {
      ok: false,
      reason: `the model needs ${mib(needed)} with its KV cache; the pool's workers offer ${mib(available)} usable`
    }
  }
  for (let size = 1; size <= usable.length; size++) {
    const best = bestSubset(usable, size, init.maxSubsets ?? 5_000, (subset) => fit(subset, capacity, init))
    if (best !== undefined) return { ok: true, plan: best }
  }
  return {
    ok: false,
    reason: 'no set of workers can hold the layers: a single layer is larger than any worker offers'
  }
}

/** Bytes the model puts on RPC workers: everything but the token embeddings, plus KV cache. */
export function placedBytes(layout: ModelLayout, contextTokens: number): number {
  const kv = layout.kvBytesPerTokenPerLayer * contextTokens * layout.layerCount
  return layout.totalBytes - layout.inputBytes + kv
}

/** Lowest total RTT among the subsets of this size that fit (all of them while few, else greedy). */
function bestSubset(
  workers: readonly Candidate[],
  size: number,
  maxSubsets: number,
  fits: (subset: readonly Candidate[]) => Plan | undefined
): Plan | undefined {
  const byRtt = [...workers].sort((a, b) => rtt(a) - rtt(b) || b.offeredBytes - a.offeredBytes)
  if (combinations(byRtt.length, size) > maxSubsets) {
    const byMemory = [...workers].sort((a, b) => b.offeredBytes - a.offeredBytes).slice(0, size)
    return fits(byMemory.sort((a, b) => rtt(a) - rtt(b)))
  }
  let best: Plan | undefined
  for (const subset of subsets(byRtt, size)) {
    const plan = fits(subset)
    if (plan !== undefined && (best === undefined || plan.totalRttMs < best.totalRttMs)) best = plan
  }
  return best
}

/**
 * Shares proportional to capacity, then corrected until no worker gets more than it can hold:
 * llama.cpp assigns whole layers (the output layer counting as one), so a share is only a wish.
 */
function fit(
  subset: readonly Candidate[],
  capacity: (c: Candidate) => number,
  init: PlacementInit
): Plan | undefined {
  const caps = subset.map(capacity)
  const split = [...caps]
  const { layout } = init
  const kvPerLayer = layout.kvBytesPerTokenPerLayer * init.contextTokens
  for (let attempt = 0; attempt < 64; attempt++) {
    // Check exactly what llama-server will be given: the rounded shares.
    const shares = rounded(split)
    const devices = layerDevices(layout.layerCount, shares)
    const bytes = caps.map(() => 0)
    devices.forEach((device, layer) => {
      bytes[device] =
        (bytes[device] ?? 0) +
        (layer < layout.layerCount ? (layout.layerBytes[layer] ?? 0) + kvPerLayer : layout.outputBytes)
    })
    const over = bytes.findIndex((b, i) => b > (caps[i] ?? 0))
    if (over === -1) return toPlan(subset, devices, bytes, caps, shares, layout.layerCount)
    split[over] = (split[over] ?? 0) * 0.8
  }
  return undefined
}

function toPlan(
  subset: readonly Candidate[],
  devices: readonly number[],
  bytes: readonly number[],
  caps: readonly number[],
  split: readonly number[],
  layerCount: number
): Plan {
  const repeating = devices.slice(0, layerCount)
  const workers = subset.map((c, i) => {
    const first = repeating.indexOf(i)
    return {
      id: c.id,
      layers: first === -1 ? null : ([first, repeating.lastIndexOf(i)] as const),
      holdsOutput: devices[layerCount] === i,
      bytes: bytes[i] ?? 0,
      capacityBytes: caps[i] ?? 0
    }
  })
  return {
    workers,
    tensorSplit: split,
    totalRttMs: subset.reduce((sum, c) => sum + rtt(c), 0)
  }
}

/** Shares as fractions with three decimals, as they are written on llama-server's command line. */
function rounded(split: readonly number[]): number[] {
  const total = split.reduce((a, b) => a + b, 0)
  return split.map((s) => Math.round((s / total) * 1000) / 1000)
}

function rtt(c: Candidate): number {
  return c.rttMs ?? UNKNOWN_RTT_MS
}

function* subsets<T>(items: readonly T[], size: number, start = 0, chosen: T[] = []): Generator<T[]> {
  if (chosen.length === size) {
    yield [...chosen]
    return
  }
  for (let i = start; i <= items.length - (size - chosen.length); i++) {
    chosen.push(items[i] as T)
    yield* subsets(items, size, i + 1, chosen)
    chosen.pop()
  }
}

function combinations(n: number, k: number): number {
  let result = 1
  for (let i = 1; i <= k; i++) result = (result * (n - k + i)) / i
  return result
}

function mib(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(0)} MiB`
}
