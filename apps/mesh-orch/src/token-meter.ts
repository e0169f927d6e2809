/**
 * Counts the tokens the pool generated for its callers: a running total, and a rate averaged over
 * the last `windowSeconds` whole seconds (one counter per second, so memory stays fixed however
 * busy the pool is).
 */
export class TokenMeter {
  readonly windowSeconds: number
  private totalValue = 0
  private readonly buckets: Array<{ second: number; tokens: number }>
  private readonly now: () => number

  constructor(windowSeconds = 5, now: () => number = Date.now) {
    this.windowSeconds = windowSeconds
    this.buckets = Array.from({ length: windowSeconds + 1 }, () => ({ second: -1, tokens: 0 }))
    this.now = now
  }

  get total(): number {
    return this.totalValue
  }

  add(tokens: number): void {
    if (!Number.isFinite(tokens) || tokens <= 0) return
    const second = Math.floor(this.now() / 1000)
    const bucket = this.buckets[second % this.buckets.length] as { second: number; tokens: number }
    if (bucket.second !== second) {
      bucket.second = second
      bucket.tokens = 0
    }
    bucket.tokens += tokens
    this.totalValue += tokens
  }

  /** Tokens per second over the last whole seconds (the current, partial one is left out). */
  perSecond(): number {
    const current = Math.floor(this.now() / 1000)
    let sum = 0
    for (const b of this.buckets)
      if (b.second < current && b.second >= current - this.windowSeconds) sum += b.tokens
    return sum / this.windowSeconds
  }
}
