import { homedir } from 'node:os'
import { join } from 'node:path'

/** `${XDG_CACHE_HOME:-~/.cache}/frankenstein-mesh`: built binaries, downloaded sources, models. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env['XDG_CACHE_HOME'] !== undefined && env['XDG_CACHE_HOME'] !== ''
      ? env['XDG_CACHE_HOME']
      : join(homedir(), '.cache')
  return join(base, 'frankenstein-mesh')
}
