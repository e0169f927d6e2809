import { execFile } from 'node:child_process'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

/** Where a user service lives on this platform, what it says, and how it is started and stopped. */
export interface ServiceFile {
  readonly path: string
  readonly content: string
  readonly start: ReadonlyArray<readonly string[]>
  readonly stop: ReadonlyArray<readonly string[]>
  readonly logs: string
}

const UNIT = 'frankenstein-mesh-agent.service'
const LABEL = 'org.frankenstein-mesh.agent'

/** systemd quoting: each argument in double quotes, `\` and `"` escaped, `%` doubled. */
function systemdQuote(arg: string): string {
  return `"${arg.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('%', '%%')}"`
}

function xmlEscape(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
}

/**
 * The service that runs `command` (the agent's `join` with its arguments) for this user: a
 * systemd user unit on Linux, a launchd agent on macOS. It starts at login, restarts after a
 * failure (not after `mesh-agent leave`), and stops with SIGTERM, which ends leases with notice.
 */
export function serviceFile(
  command: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform
): ServiceFile {
  const home = env['HOME'] ?? homedir()
  if (platform === 'darwin') {
    const path = join(home, 'Library', 'LaunchAgents', `${LABEL}.plist`)
    const log = join(home, 'Library', 'Logs', 'frankenstein-mesh', 'agent.log')
    const args = command.map((a) => `    <string>${xmlEscape(a)}</string>`).join('\n')
    const content = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>${LABEL}</string>
  <key>ProgramArguments</key>
  <array>
${args}
  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ProcessType</key>
  <string>Background</string>
  <key>StandardOutPath</key>
  <string>${xmlEscape(log)}</string>
  <key>StandardErrorPath</key>
  <string>${xmlEscape(log)}</string>
</dict>
</plist>
`
    return {
      path,
      content,
      start: [['launchctl', 'load', '-w', path]],
      stop: [['launchctl', 'unload', '-w', path]],
      logs: log
    }
  }
  const configHome = env['XDG_CONFIG_HOME'] ?? join(home, '.config')
  const path = join(configHome, 'systemd', 'user', UNIT)
  const content = `[Unit]
Description=Frankenstein Mesh agent: lends this machine to LLM pools
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=${command.map(systemdQuote).join(' ')}
# A crash restarts it; 'mesh-agent leave' exits cleanly and stays stopped.
Restart=on-failure
RestartSec=10
# SIGTERM ends the leases with notice; give the holders the grace to drain.
KillSignal=SIGTERM
TimeoutStopSec=60
Nice=10

[Install]
WantedBy=default.target
`
  return {
    path,
    content,
    start: [
      ['systemctl', '--user', 'daemon-reload'],
      ['systemctl', '--user', 'enable', '--now', UNIT]
    ],
    stop: [
      ['systemctl', '--user', 'disable', '--now', UNIT],
      ['systemctl', '--user', 'daemon-reload']
    ],
    logs: `journalctl --user -u ${UNIT}`
  }
}

/** Runs each step; returns the first failure's message, or undefined. */
export async function runSteps(steps: ReadonlyArray<readonly string[]>): Promise<string | undefined> {
  for (const [file = '', ...args] of steps) {
    try {
      await promisify(execFile)(file, args, { timeout: 30_000 })
    } catch (err) {
      const e = err as { stderr?: string; message: string }
      return `${[file, ...args].join(' ')}: ${(e.stderr ?? '').trim() || e.message}`
    }
  }
  return undefined
}
