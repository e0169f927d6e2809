import { Gauge, Registry } from 'prom-client'

export interface ScrapedMetrics<S> {
  /** A gauge set from the snapshot at each scrape. */
  readonly gauge: (
    name: string,
    help: string,
    labelNames: string[],
    read: (gauge: Gauge, snapshot: S) => void
  ) => void
  /** Takes one snapshot of the state, then renders every gauge from it. */
  readonly scrape: () => Promise<string>
  readonly contentType: string
}

/**
 * Prometheus metrics read from a process's own state (its status) at each scrape, instead of
 * being kept up to date as things happen: the status stays the one source, taken once a scrape.
 */
export function scrapedMetrics<S>(snapshot: () => S): ScrapedMetrics<S> {
  const registry = new Registry()
  let current: S | undefined
  return {
    gauge: (name, help, labelNames, read) => {
      new Gauge({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          this.reset()
          if (current !== undefined) read(this, current)
        }
      })
    },
    scrape: async () => {
      current = snapshot()
      try {
        return await registry.metrics()
      } finally {
        current = undefined
      }
    },
    contentType: registry.contentType
  }
}
