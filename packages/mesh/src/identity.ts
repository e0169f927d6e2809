import { randomUUID } from 'node:crypto'
import { chmod, link, mkdir, open, readFile, rm, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { z } from 'zod'
import { IdentityError } from './errors.ts'

export type Role = 'agent' | 'orchestrator'

export interface Identity {
  readonly privateKey: PrivateKey
  readonly peerId: string
  readonly path: string
  /** True when this call created the key (first start on this machine). */
  readonly created: boolean
}

const KeyFile = z.object({
  version: z.literal(1),
  type: z.literal('Ed25519'),
  /** libp2p protobuf encoding of the private key, base64. */
  privateKey: z.string().min(1).max(256)
})

/** `${XDG_CONFIG_HOME:-~/.config}/frankenstein-mesh/<role>.key`: one identity per machine and role. */
export function defaultIdentityPath(role: Role, env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env['XDG_CONFIG_HOME'] !== undefined && env['XDG_CONFIG_HOME'] !== ''
      ? env['XDG_CONFIG_HOME']
      : join(homedir(), '.config')
  return join(base, 'frankenstein-mesh', `${role}.key`)
}

/**
 * Loads the Ed25519 identity at `path`, creating it (mode 0600) when there is no file. A file that
 * exists but cannot be read, does not parse, or is readable by others is an error: an identity
 * carries credit and pool membership, so it is never silently replaced.
 */
export async function loadOrCreateIdentity(path: string): Promise<Identity> {
  const info = await stat(path).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new IdentityError(
      'ERR_IDENTITY_UNREADABLE',
      `cannot read identity ${path}: ${(err as Error).message}`,
      {
        cause: err
      }
    )
  })
  if (info === undefined) return await createIdentity(path)
  if ((info.mode & 0o077) !== 0) {
    throw new IdentityError(
      'ERR_IDENTITY_PERMISSIONS',
      `identity ${path} is accessible by other users (mode ${(info.mode & 0o777).toString(8)}); run: chmod 600 ${path}`
    )
  }
  const text = await readFile(path, 'utf8').catch((err: unknown) => {
    throw new IdentityError(
      'ERR_IDENTITY_UNREADABLE',
      `cannot read identity ${path}: ${(err as Error).message}`,
      { cause: err }
    )
  })
  const privateKey = parseKeyFile(text, path)
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString(), path, created: false }
}

function parseKeyFile(text: string, path: string): PrivateKey {
  try {
    const file = KeyFile.parse(JSON.parse(text))
    return privateKeyFromProtobuf(Buffer.from(file.privateKey, 'base64'))
  } catch (err) {
    throw new IdentityError(
      'ERR_IDENTITY_CORRUPT',
      `identity ${path} is corrupt; move it away to create a new identity`,
      {
        cause: err
      }
    )
  }
}

async function createIdentity(path: string): Promise<Identity> {
  const privateKey = await generateKeyPair('Ed25519')
  const body = `${JSON.stringify({ version: 1, type: 'Ed25519', privateKey: Buffer.from(privateKeyToProtobuf(privateKey)).toString('base64') })}\n`
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.tmp-${process.pid}-${randomUUID()}`
  const file = await open(tmp, 'wx', 0o600)
  try {
    await file.writeFile(body)
    await file.sync()
  } finally {
    await file.close()
  }
  await chmod(tmp, 0o600)
  try {
    // link() never replaces: if a concurrent first start won the race, keep its key.
    await link(tmp, path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return await loadOrCreateIdentity(path)
  } finally {
    await rm(tmp, { force: true })
  }
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString(), path, created: true }
}

/** A fresh Ed25519 key that lives in memory only (tests, throwaway nodes). */
export async function ephemeralPrivateKey(): Promise<PrivateKey> {
  return await generateKeyPair('Ed25519')
}
