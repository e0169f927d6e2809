import { mkdir, writeFile } from 'node:fs/promises'
import { cpus, totalmem } from 'node:os'
import { join } from 'node:path'

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

export function machine(): Record<string, unknown> {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    node: process.version
  }
}

/** Writes `bench/results/<name>-<timestamp>.json` and returns its path. */
export async function saveResult(name: string, result: unknown): Promise<string> {
  const dir = join(import.meta.dirname, 'results')
  await mkdir(dir, { recursive: true })
  const path = join(dir, `${name}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  await writeFile(path, `${JSON.stringify(result, null, 2)}\n`)
  return path
}

/** A markdown table, for the terminal and for pasting into the README. */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}

export interface Generation {
  readonly tokensPerSecond: number
  readonly tokens: readonly number[]
}

/** One greedy generation of exactly `n` tokens; speed as llama-server measured it (decode only). */
export async function generate(url: string, prompt: string, n: number): Promise<Generation> {
  const res = await fetch(`${url}/completion`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      prompt,
      n_predict: n,
      temperature: 0,
      ignore_eos: true,
      return_tokens: true,
      cache_prompt: false
    }),
    signal: AbortSignal.timeout(600_000)
  })
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`)
  const body = (await res.json()) as { tokens: number[]; timings: { predicted_per_second: number } }
  return { tokensPerSecond: body.timings.predicted_per_second, tokens: body.tokens }
}
