import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { chmod, mkdir, open, readFile, readdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import {
  silentLogger,
  startLlamaServer,
  type LlamaBinaries,
  type LlamaModelSpec
} from '@frankenstein-mesh/llama'
import {
  acquireLease,
  createMeshNode,
  ephemeralPrivateKey,
  multiaddr,
  peerIdFromString
} from '@frankenstein-mesh/mesh'
import { startRpcTunnel } from '@frankenstein-mesh/tunnel'
import { spawnAgent, type AgentProcess, loopbackJoinArgs } from './fixtures/agent-process.ts'
import { credentialFor } from './fixtures/credentials.ts'
import { createScratch, testBinaries, type Scratch } from './fixtures/llama.ts'
import { createNetwork, netnsAvailable } from './fixtures/netns.ts'

/*
 * What we promise contributors, checked on the real binaries: rpc-server faces loopback only (the
 * agent looks at its actual sockets), a load writes no model bytes to the worker's disk, and the
 * memory a pool used is given back when its lease ends.
 */

const run = promisify(execFile)
const AGENT = join(import.meta.dirname, '..', 'apps', 'mesh-agent', 'src', 'bin.ts')
const MiB = 1024 * 1024

/** ~190 MB of F32 weights: big enough that its memory shows plainly in rpc-server's RSS. */
const MEDIUM: LlamaModelSpec = {
  name: 'medium',
  layers: 4,
  embedding: 1024,
  feedForward: 2816,
  heads: 16,
  kvHeads: 4,
  contextLength: 1024,
  weightType: 'f32',
  seed: 3
}

interface RpcStatus {
  rpcServer: { pid?: number; listening?: string[]; rssBytes?: number }
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name))
}

describe('promises to contributors', { timeout: 300_000 }, () => {
  let bins: LlamaBinaries
  let scratch: Scratch
  let agent: AgentProcess
  let home: string
  const status = async (): Promise<RpcStatus> =>
    JSON.parse(
      (await run(process.execPath, [AGENT, 'status', '--identity', join(scratch.dir, 'agent.key'), '--json']))
        .stdout
    ) as RpcStatus

  before(async () => {
    bins = await testBinaries()
    scratch = await createScratch('promises')
    // The worker's own home, cache and temp folders, empty, so that anything written shows.
    home = join(scratch.dir, 'home')
    await Promise.all(['.cache', 'tmp'].map((d) => mkdir(join(home, d), { recursive: true })))
    agent = await spawnAgent(
      [
        '--pool',
        'promises',
        ...loopbackJoinArgs({
          identity: join(scratch.dir, 'agent.key'),
          rpcServer: bins.rpcServer,
          mdns: false
        })
      ],
      {
        env: {
          ...process.env,
          HOME: home,
          XDG_CACHE_HOME: join(home, '.cache'),
          TMPDIR: join(home, 'tmp'),
          LLAMA_CACHE: undefined
        }
      }
    )
  })
  after(async () => {
    await agent.stop()
    await scratch.remove()
  })

  it('rpc-server listens on loopback only, as the kernel reports it', async () => {
    const { rpcServer } = await status()
    assert.deepEqual(rpcServer.listening, [`127.0.0.1:${agent.rpcPort}`])
  })

  it('a load writes no model bytes under the worker’s home, cache or temp, and its memory is given back when the lease ends', async () => {
    const model = await scratch.model(MEDIUM)
    const modelBytes = (await stat(model)).size
    // A sample of weight bytes from the middle of the file, to look for on the worker's disk.
    const handle = await open(model)
    const sample = Buffer.alloc(256)
    await handle.read(sample, 0, sample.length, Math.floor(modelBytes / 2))
    await handle.close()

    const idle = (await status()).rpcServer.rssBytes ?? 0
    const node = await createMeshNode({
      privateKey: await ephemeralPrivateKey(),
      listen: ['/ip4/127.0.0.1/tcp/0']
    })
    let loaded: number
    try {
      await node.dial(multiaddr(agent.addresses[0] ?? ''))
      const lease = await acquireLease({
        node,
        peer: peerIdFromString(agent.peerId),
        pool: 'promises',
        credential: await credentialFor(node, 'promises'),
        logger: silentLogger()
      })
      const tunnel = await startRpcTunnel({
        node,
        peer: peerIdFromString(agent.peerId),
        logger: silentLogger()
      })
      const llama = await startLlamaServer({
        binary: bins.llamaServer,
        model,
        logger: silentLogger(),
        rpc: [tunnel.endpoint],
        contextSize: 256
      })
      loaded = (await status()).rpcServer.rssBytes ?? 0
      await llama.stop()
      await tunnel.close()
      await lease.release()
    } finally {
      await node.stop()
    }

    const written = await filesUnder(home)
    for (const file of written) {
      const bytes = await readFile(file)
      assert.equal(bytes.indexOf(sample), -1, `${file} holds model bytes`)
    }
    const total = (await Promise.all(written.map(async (f) => (await stat(f)).size))).reduce(
      (a, b) => a + b,
      0
    )
    assert.ok(total < MiB, `${total} bytes written under the worker's folders: ${written.join(', ')}`)

    // The weights sat in rpc-server's memory while leased (most of the model)...
    assert.ok(loaded - idle > modelBytes / 2, `RSS ${idle} -> ${loaded} for a ${modelBytes}-byte model`)
    // ...and leave with the lease (rpc-server frees a client's buffers when it disconnects).
    let released = loaded
    for (let i = 0; i < 50 && released - idle > modelBytes / 4; i++) {
      await new Promise((r) => setTimeout(r, 100))
      released = (await status()).rpcServer.rssBytes ?? loaded
    }
    assert.ok(
      released - idle < modelBytes / 4,
      `RSS ${idle} -> ${loaded} -> ${released} after the lease ended`
    )
  })
})

const available = await netnsAvailable()

describe(
  'an rpc-server that listens beyond loopback is refused',
  { skip: available.ok ? false : available.reason, timeout: 120_000 },
  () => {
    let scratch: Scratch
    before(async () => {
      scratch = await createScratch('exposed')
    })
    after(async () => {
      await scratch.remove()
    })

    it('stops it and exits with ERR_RPC_EXPOSED (in a namespace of its own)', async () => {
      const bins = await testBinaries()
      // A wrapper that changes --host, as a careless packager might: the agent must see it anyway.
      const wrapper = join(scratch.dir, 'rpc-server-any-host')
      await writeFile(
        wrapper,
        `#!/bin/sh\nargs=""\nfor a in "$@"; do [ "$a" = 127.0.0.1 ] && a=0.0.0.0; args="$args $a"; done\nexec ${bins.rpcServer} $args\n`
      )
      await chmod(wrapper, 0o755)
      const network = await createNetwork({ name: 'exposed', hosts: 1 })
      try {
        const host = network.hosts[0]
        assert.ok(host !== undefined)
        // The namespace's loopback must be up for the agent's own HELLO to reach rpc-server.
        await network.exec(host, 'ip', ['link', 'set', 'lo', 'up'])
        const result = await network.exec(
          host,
          process.execPath,
          [
            AGENT,
            'join',
            '--trust-on-first-use',
            '--pool',
            'exposed',
            ...loopbackJoinArgs({ identity: join(scratch.dir, 'agent.key'), rpcServer: wrapper, mdns: false })
          ],
          { timeoutMs: 60_000 }
        )
        assert.notEqual(result.code, 0)
        assert.match(result.stderr, /ERR_RPC_EXPOSED/)
        assert.match(result.stderr, /0\.0\.0\.0:\d+/)
      } finally {
        await network.destroy()
      }
    })
  }
)
