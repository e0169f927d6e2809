/**
 * The README's demo: a whole pool on one machine, through the real command lines. `mesh-orch
 * serve` for pool "demo", two `mesh-agent join --pool demo` workers (each with its own
 * ggml-rpc-server) that find it over the mesh, the plan the orchestrator makes, and a completion
 * from its OpenAI-compatible API, served through the encrypted tunnels.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { parseArgs, promisify } from 'node:util'
import { TINY_MODEL, createLogger, ensureBinaries, ensureModel } from '@frankenstein-mesh/llama'

const { values } = parseArgs({
  options: {
    prompt: { type: 'string', default: 'The mesh of many machines' },
    tokens: { type: 'string', default: '32' },
    help: { type: 'boolean', default: false }
  }
})
if (values.help) {
  console.log(
    'usage: scripts/demo.sh [--prompt TEXT] [--tokens N]\n\nRuns a two-worker pool on this machine and prints a completion served through it.'
  )
  process.exit(0)
}
const tokens = Number(values.tokens)
if (!Number.isInteger(tokens) || tokens < 1 || tokens > 4096) {
  console.error('demo: --tokens must be an integer from 1 to 4096')
  process.exit(2)
}

const ROOT = join(import.meta.dirname, '..')
const AGENT = join(ROOT, 'apps', 'mesh-agent', 'src', 'bin.ts')
const ORCH = join(ROOT, 'apps', 'mesh-orch', 'src', 'bin.ts')
const logger = createLogger({ name: 'demo', level: process.env['FM_LOG_LEVEL'] ?? 'warn' })
const children: ChildProcess[] = []
const scratch = await mkdtemp(join(tmpdir(), 'fm-demo-'))

/** Starts one of our CLIs and returns the JSON line it prints once ready. */
async function start(bin: string, args: string[]): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [bin, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, FM_LOG_LEVEL: process.env['FM_LOG_LEVEL'] ?? 'error' }
  })
  children.push(child)
  return await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', (line) =>
      resolve(JSON.parse(line) as Record<string, unknown>)
    )
    child.once('exit', (code) => reject(new Error(`${bin} ${args[0] ?? ''} exited with ${code}`)))
  })
}

async function healthy(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const res = await fetch(`${url}/health`).catch(() => undefined)
    if (res?.status === 200) return
    await res?.body?.cancel()
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error(`the pool did not start serving within ${timeoutMs / 1000} s`)
}

try {
  const bins = await ensureBinaries({ logger })
  const model = await ensureModel(TINY_MODEL, { logger })
  console.log(
    `llama.cpp: ${bins.build === undefined ? bins.source : `${bins.build.commit.slice(0, 9)}, RPC ${bins.build.rpcProtocol}, ${bins.build.backend}`}`
  )
  console.log(`model: ${model}`)

  const identity = join(scratch, 'orch.key')
  const orch = await start(ORCH, [
    'serve',
    '--pool',
    'demo',
    '--model',
    model,
    '--port',
    '0',
    '--identity',
    identity,
    '--listen',
    '/ip4/127.0.0.1/tcp/0',
    '--llama-server-bin',
    bins.llamaServer,
    '--ctx-size',
    '2048',
    '--parallel',
    '2'
  ])
  const url = String(orch['url'])
  console.log(`mesh-orch serve: pool "demo" created, OpenAI-compatible API at ${url}`)
  // The invite is the only thing a contributor gets: it names the pool, its owner's key, and where
  // to meet it. Workers that hold it are admitted; they take only the owner's word for the pool.
  const address = (orch['addresses'] as string[])[0] ?? ''
  const invite = (
    await promisify(execFile)(process.execPath, [
      ORCH,
      'pool',
      'invite',
      '--pool',
      'demo',
      '--identity',
      identity,
      '--bootstrap',
      address
    ])
  ).stdout.trim()
  console.log(`mesh-orch pool invite: ${invite.slice(0, 48)}... (${invite.length} characters)`)
  const started = performance.now()
  // 64 MiB each: neither can hold the model and its KV cache alone, so the plan splits it.
  for (const name of ['worker-1', 'worker-2']) {
    const agent = await start(AGENT, [
      'join',
      '--pool',
      invite,
      '--identity',
      join(scratch, `${name}.key`),
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--memory',
      '64MiB',
      '--rpc-server-bin',
      bins.rpcServer
    ])
    console.log(`mesh-agent join --pool <invite>: ${name} is ${String(agent['peerId'])}`)
  }
  await healthy(url, 120_000)
  console.log(
    `the pool serves, ${((performance.now() - started) / 1000).toFixed(1)} s after the workers started (discovery, leases, plan, model load)`
  )
  const { stdout } = await promisify(execFile)(process.execPath, [
    ORCH,
    'status',
    '--identity',
    join(scratch, 'orch.key')
  ])
  console.log(stdout.trimEnd().replace(/^/gm, '  '))

  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: values.prompt, max_tokens: tokens, temperature: 0 }),
    signal: AbortSignal.timeout(120_000)
  })
  if (!res.ok) throw new Error(`the pool answered HTTP ${res.status}: ${await res.text()}`)
  const body = (await res.json()) as {
    choices: Array<{ text: string }>
    timings?: { predicted_per_second?: number }
  }
  console.log(`prompt: ${JSON.stringify(values.prompt)}`)
  console.log(`completion: ${JSON.stringify(body.choices[0]?.text ?? '')}`)
} catch (err) {
  const code = (err as { code?: string }).code
  console.error(`demo: ${(err as Error).message}${code === undefined ? '' : ` [${code}]`}`)
  process.exitCode = 1
} finally {
  // The orchestrator first, so that it releases its leases while the workers still listen.
  for (const child of children) {
    if (child.exitCode !== null) continue
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }
  await rm(scratch, { recursive: true, force: true })
}
