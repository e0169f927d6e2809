/**
 * Which device llama.cpp puts each layer on for a `--tensor-split` with all layers offloaded
 * (llama-model.cpp, load_tensors): split points are the normalized cumulative shares, in float32,
 * and layer `il` of `n + 1` (the output layer counts) goes to the first device whose split point
 * exceeds `il / (n + 1)`. Returns the device index of every layer, then of the output layer.
 */
export function layerDevices(layerCount: number, tensorSplit: readonly number[]): number[] {
  const f = Math.fround
  let sum = f(0)
  const points = tensorSplit.map((share) => (sum = f(sum + f(share))))
  const normalized = points.map((p) => f(p / sum))
  const slots = layerCount + 1
  const devices: number[] = []
  for (let il = 0; il <= layerCount; il++) {
    const x = f(il / slots)
    const device = normalized.findIndex((p) => p > x)
    devices.push(device === -1 ? normalized.length - 1 : device)
  }
  return devices
}

/** Layer ranges per device, e.g. `[[0, 2], [3, 5]]`; the output layer is left out. */
export function layerRanges(
  layerCount: number,
  tensorSplit: readonly number[]
): Array<[number, number] | null> {
  const devices = layerDevices(layerCount, tensorSplit).slice(0, layerCount)
  return tensorSplit.map((_, d) => {
    const first = devices.indexOf(d)
    return first === -1 ? null : [first, devices.lastIndexOf(d)]
  })
}
