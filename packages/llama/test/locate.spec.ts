import assert from 'node:assert/strict'
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { BINARY_ENV, buildDir, locateBinaries, locateRpcServer, rpcServerBuildDir } from '../src/index.ts'

let dir: string
const fake = async (path: string) => {
  await mkdir(join(path, '..'), { recursive: true })
  await writeFile(path, '#!/bin/sh\nexit 0\n')
  await chmod(path, 0o755)
  return path
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-locate-'))
})
after(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('locateBinaries', () => {
  it('prefers explicit paths, then the environment, then PATH', async () => {
    const explicit = { rpc: await fake(join(dir, 'x', 'rpc')), llama: await fake(join(dir, 'x', 'llama')) }
    const fromEnv = { rpc: await fake(join(dir, 'e', 'rpc')), llama: await fake(join(dir, 'e', 'llama')) }
    await fake(join(dir, 'p', 'ggml-rpc-server'))
    await fake(join(dir, 'p', 'llama-server'))
    const env = {
      PATH: join(dir, 'p'),
      [BINARY_ENV.rpcServer]: fromEnv.rpc,
      [BINARY_ENV.llamaServer]: fromEnv.llama,
      XDG_CACHE_HOME: join(dir, 'c')
    }

    const a = await locateBinaries({
      backend: 'cpu',
      env,
      rpcServer: explicit.rpc,
      llamaServer: explicit.llama
    })
    assert.deepEqual([a?.source, a?.rpcServer, a?.llamaServer], ['flag', explicit.rpc, explicit.llama])
    const b = await locateBinaries({ backend: 'cpu', env })
    assert.deepEqual([b?.source, b?.rpcServer], ['env', fromEnv.rpc])
    const c = await locateBinaries({
      backend: 'cpu',
      env: { PATH: env.PATH, XDG_CACHE_HOME: env.XDG_CACHE_HOME }
    })
    assert.deepEqual([c?.source, c?.rpcServer], ['path', join(dir, 'p', 'ggml-rpc-server')])
  })

  it('finds a finished build in the cache, and ignores one without build-info', async () => {
    const env = { PATH: '', XDG_CACHE_HOME: join(dir, 'cache') }
    const build = buildDir('cpu', env)
    await fake(join(build, 'bin', 'ggml-rpc-server'))
    await fake(join(build, 'bin', 'llama-server'))
    assert.equal(
      await locateBinaries({ backend: 'cpu', env }),
      undefined,
      'no build-info: an unfinished build'
    )
    const info = {
      commit: 'a'.repeat(40),
      rpcProtocol: '6.0.0',
      backend: 'cpu',
      cmakeFlags: [],
      source: 'x',
      builtAt: 'now'
    }
    await writeFile(join(build, 'build-info.json'), JSON.stringify(info))
    const found = await locateBinaries({ backend: 'cpu', env })
    assert.equal(found?.source, 'cache')
    assert.equal(found.build?.rpcProtocol, '6.0.0')
    assert.equal(
      await locateBinaries({ backend: 'cuda', env }),
      undefined,
      'another backend is another build'
    )
  })

  it('refuses an explicit path that is not an executable file', async () => {
    await assert.rejects(
      locateBinaries({ backend: 'cpu', env: { PATH: '' }, rpcServer: dir, llamaServer: dir }),
      { code: 'ERR_BINARY_NOT_FOUND' }
    )
  })
})

describe('locateRpcServer', () => {
  const info = (rpcProtocol: string) =>
    JSON.stringify({
      commit: 'b'.repeat(40),
      rpcProtocol,
      backend: 'cpu',
      cmakeFlags: [],
      source: 'x',
      builtAt: 'now'
    })

  it('takes FM_RPC_SERVER or PATH alone, without a llama-server beside it', async () => {
    const rpc = await fake(join(dir, 'only', 'ggml-rpc-server'))
    const noCache = join(dir, 'none')
    const fromEnv = await locateRpcServer({
      backend: 'cpu',
      env: { PATH: '', XDG_CACHE_HOME: noCache, [BINARY_ENV.rpcServer]: rpc }
    })
    assert.deepEqual([fromEnv?.source, fromEnv?.rpcServer], ['env', rpc])
    const fromPath = await locateRpcServer({
      backend: 'cpu',
      env: { PATH: join(dir, 'only'), XDG_CACHE_HOME: noCache }
    })
    assert.deepEqual([fromPath?.source, fromPath?.rpcServer], ['path', rpc])
    assert.equal(
      await locateBinaries({ backend: 'cpu', env: { PATH: join(dir, 'only'), XDG_CACHE_HOME: noCache } }),
      undefined
    )
  })

  it('finds a build of rpc-server alone, and prefers a full build', async () => {
    const env = { PATH: '', XDG_CACHE_HOME: join(dir, 'rpc-cache') }
    assert.equal(await locateRpcServer({ backend: 'cpu', env }), undefined)
    const alone = rpcServerBuildDir('cpu', env)
    await fake(join(alone, 'bin', 'ggml-rpc-server'))
    assert.equal(await locateRpcServer({ backend: 'cpu', env }), undefined, 'no build-info: unfinished')
    await writeFile(join(alone, 'build-info.json'), info('6.0.0'))
    const found = await locateRpcServer({ backend: 'cpu', env })
    assert.deepEqual([found?.source, found?.rpcServer], ['cache', join(alone, 'bin', 'ggml-rpc-server')])
    assert.equal(await locateBinaries({ backend: 'cpu', env }), undefined, 'no llama-server in it')

    const full = buildDir('cpu', env)
    await fake(join(full, 'bin', 'ggml-rpc-server'))
    await fake(join(full, 'bin', 'llama-server'))
    await writeFile(join(full, 'build-info.json'), info('6.0.0'))
    assert.equal(
      (await locateRpcServer({ backend: 'cpu', env }))?.rpcServer,
      join(full, 'bin', 'ggml-rpc-server')
    )
  })
})
