#!/usr/bin/env bash
# Lend this machine to Frankenstein Mesh pools in one command, run from a clone of this repository:
# Node 24 and pnpm (scripts/lib/toolchain.sh), the dependencies, llama.cpp's ggml-rpc-server built
# for this machine's accelerator, the agent's identity, the pools joined and the agent installed as a
# service of this user. Everything it adds is written to a manifest first, so that `--leave` removes
# exactly that and nothing else.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
manifest="$root/.join-pool.manifest"

usage() {
  cat <<'EOF'
Usage: scripts/join-pool.sh --pool <invite|name> [--pool ...] [options] [-- <mesh-agent join arguments>]
       scripts/join-pool.sh --leave

Lends this machine to Frankenstein Mesh pools: installs Node 24 and pnpm into .tools/ when the
system Node is older, the dependencies, builds llama.cpp's ggml-rpc-server for this machine (Metal
on macOS, CUDA with nvcc and a GPU, CPU otherwise; minutes, once, rpc-server alone), creates the
agent's identity, joins the pools and runs the agent as a service of this user (a systemd user
unit on Linux, a launchd agent on macOS). Reruns are safe: they reuse what is there.

  --pool <invite|name[=weight]>  a pool to join: an invite from its owner (`mesh-orch pool invite`,
                                 fm-invite:...) or a name joined before; repeatable
  --trust-on-first-use           for a pool given by name without an invite: accept the first owner
                                 key met on the network (a LAN you trust only)
  --memory <size>                memory lent to pools, e.g. 8GiB (default: 80% of what is free)
  --bootstrap <multiaddr>        a peer to join the mesh through; repeatable
  --no-start                     write the service but do not start it
  --leave                        stop and remove the service, and remove everything this script
                                 added (toolchain, dependencies, binaries, identity and state it
                                 created), as listed in .join-pool.manifest
  -h, --help                     this text
  -- <args>                      more arguments for `mesh-agent join` (see its --help)

Needs curl, openssl, git, tar, cmake, make (or ninja) and a C++ compiler. It writes the peer id,
the pools and where the logs go on stdout, progress on stderr.
EOF
}

usage_error() {
  printf 'join-pool: %s\n' "$1" >&2
  printf "run 'scripts/join-pool.sh --help' for usage\n" >&2
  exit 2
}
say() { printf '[join-pool] %s\n' "$*" >&2; }
die() {
  printf '[join-pool] error: %s\n' "$*" >&2
  exit 1
}

pools=()
join_args=()
leave=0
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --pool | --memory | --bootstrap)
      [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || usage_error "$1 needs a value"
      if [ "$1" = --pool ]; then pools+=("$2"); else join_args+=("$1" "$2"); fi
      shift 2
      ;;
    --pool=* | --memory=* | --bootstrap=*)
      [ -n "${1#*=}" ] || usage_error "${1%%=*} needs a value"
      if [ "${1%%=*}" = --pool ]; then pools+=("${1#*=}"); else join_args+=("${1%%=*}" "${1#*=}"); fi
      shift
      ;;
    --trust-on-first-use) join_args+=("$1") && shift ;;
    --no-start) start=0 && shift ;;
    --leave) leave=1 && shift ;;
    -h | --help) usage && exit 0 ;;
    --) shift && join_args+=("$@") && break ;;
    *) usage_error "unknown argument: $1" ;;
  esac
done
if [ "$leave" = 1 ]; then
  [ "${#pools[@]}" = 0 ] && [ "${#join_args[@]}" = 0 ] && [ "$start" = 1 ] \
    || usage_error "--leave takes no other argument"
else
  [ "${#pools[@]}" -gt 0 ] || usage_error "give at least one --pool <invite|name>"
fi

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=macos ;;
  *) die "unsupported system $(uname -s): Linux and macOS only" ;;
esac

home=${HOME:?HOME is not set}
home=${home%/}
config_home=${XDG_CONFIG_HOME:-$home/.config}
cache_root="${XDG_CACHE_HOME:-$home/.cache}/frankenstein-mesh"
state_dir="$config_home/frankenstein-mesh"
if [ "$os" = linux ]; then
  unit="frankenstein-mesh-agent.service"
  service_file="$config_home/systemd/user/$unit"
else
  service_file="$home/Library/LaunchAgents/org.frankenstein-mesh.agent.plist"
fi

# shellcheck source=lib/manifest.sh
. "$root/scripts/lib/manifest.sh"
# shellcheck source=lib/toolchain.sh
. "$root/scripts/lib/toolchain.sh"
agent() { node "$root/apps/mesh-agent/src/bin.ts" "$@"; }
# pnpm turns on Node's compile cache, which would leave a folder in the shared temp folder.
export NODE_DISABLE_COMPILE_CACHE=1

# The commands the build and the toolchain need; a clear list of what is missing and how to get it.
check_prerequisites() {
  local missing=() cmd hint
  for cmd in curl openssl git tar cmake; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
  command -v make >/dev/null || command -v ninja >/dev/null || missing+=(make)
  command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null \
    || missing+=("a C++ compiler")
  # The toolchain pins Node for Linux only: on macOS, Node 24 comes from the system.
  if [ "$os" = macos ] && [ "$(fm_node_major "$(command -v node || echo node)")" -lt 24 ]; then
    missing+=("Node 24")
  fi
  [ "${#missing[@]}" = 0 ] && return 0
  hint='sudo apt-get install ca-certificates curl openssl git cmake make g++   (Debian, Ubuntu)
  sudo dnf install curl openssl git cmake make gcc-c++                      (Fedora)'
  [ "$os" = macos ] && hint='xcode-select --install && brew install cmake node@24'
  die "missing: ${missing[*]}. Install them, e.g.:
  $hint"
}

# Node 24 and pnpm through the repository's toolchain, dependencies from the lockfile (production
# only in a fresh clone: a developer's full install is left as it is).
install_toolchain() {
  local tools_before bin_before install_flags=() modules=("$root/node_modules") dir
  fm_manifest_claim "$root/.tools"
  tools_before=$(fm_manifest_entries "$root/.tools")
  bin_before=$(fm_manifest_entries "$root/.tools/bin")
  mkdir -p "$root/.tools/bin"
  fm_ensure_node "$root/.tools"
  fm_ensure_pnpm "$root/.tools"
  fm_manifest_claim_new "$root/.tools" "$tools_before"
  fm_manifest_claim_new "$root/.tools/bin" "$bin_before"
  export PATH="$root/.tools/bin:$PATH"
  # pnpm's own folders in the home (package store, metadata cache, state), claimed before pnpm
  # first runs; then the store where pnpm says it is (another disk's root, say).
  if [ "$os" = macos ]; then
    fm_manifest_claim "$home/Library/Caches/pnpm" "$home/Library/pnpm"
  else
    fm_manifest_claim "${XDG_DATA_HOME:-$home/.local/share}/pnpm" "${XDG_CACHE_HOME:-$home/.cache}/pnpm" \
      "${XDG_STATE_HOME:-$home/.local/state}/pnpm"
  fi
  fm_manifest_claim "$(cd "$root" && pnpm store path)"
  if [ ! -e "$root/node_modules" ] || fm_manifest_has tree "$root/node_modules"; then install_flags=(--prod); fi
  for dir in "$root"/apps/*/ "$root"/packages/*/; do modules+=("${dir%/}/node_modules"); done
  fm_manifest_claim "${modules[@]}"
  fm_toolchain "$root" ${install_flags[@]+"${install_flags[@]}"}
}

# ggml-rpc-server for this machine's accelerator, found or built by packages/llama (a progress bar
# on a terminal, log lines otherwise).
ensure_rpc_server() {
  local cache_before sources_before json
  rpc_backend=$(node "$root/packages/llama/src/cli.ts" backend)
  say "system: $os $(uname -m), accelerator: $rpc_backend"
  # Folders that were there before (even empty) are not ours; what appears in them is.
  cache_existed=false sources_existed=false
  [ ! -d "$cache_root" ] || cache_existed=true
  [ ! -d "$cache_root/sources" ] || sources_existed=true
  fm_manifest_claim "$cache_root"
  cache_before=$(fm_manifest_entries "$cache_root")
  sources_before=$(fm_manifest_entries "$cache_root/sources")
  json=$(node "$root/packages/llama/src/cli.ts" ensure --rpc-server-only --check --backend "$rpc_backend") \
    || die "could not find or build ggml-rpc-server (see above)"
  if $cache_existed; then
    fm_manifest_claim_new "$cache_root" "$cache_before"
    ! $sources_existed || fm_manifest_claim_new "$cache_root/sources" "$sources_before"
  fi
  rpc_server=$(json_field rpcServer "$json")
  rpc_protocol=$(json_field rpcProtocol "$json")
}

json_field() {
  node -e 'process.stdout.write(String(JSON.parse(process.argv[2])[process.argv[1]] ?? "?"))' "$1" "$2"
}

# Whether `systemctl --user` reaches a user manager (there is none in a container or a chroot, or
# in an ssh session of a user without lingering).
user_manager_runs() {
  command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1
}

install_service() {
  local args=() pool no_start=()
  for pool in "${pools[@]}"; do args+=(--pool "$pool"); done
  args+=(--rpc-server-bin "$rpc_server" ${join_args[@]+"${join_args[@]}"})
  fm_manifest_claim "$state_dir" "$service_file"
  if [ "$os" = macos ]; then
    # launchd does not create the folder of the log it writes.
    fm_manifest_claim "$home/Library/Logs/frankenstein-mesh"
    mkdir -p "$home/Library/Logs/frankenstein-mesh"
  fi
  # A rerun replaces the service, so that the agent restarts with the new arguments.
  if [ -e "$service_file" ]; then agent uninstall-service >&2; fi
  manager_missing=0
  if [ "$start" = 1 ] && [ "$os" = linux ] && ! user_manager_runs; then manager_missing=1; fi
  if [ "$start" = 0 ] || [ "$manager_missing" = 1 ]; then no_start=(--no-start); fi
  agent install-service ${no_start[@]+"${no_start[@]}"} -- "${args[@]}" || die "mesh-agent install-service failed (see above)"
}

no_manager_note() {
  cat >&2 <<EOF
[join-pool] no systemd user manager runs here (a container, a chroot, or a session without one):
  the unit is written to $service_file but not started. Start it from a login session with
    systemctl --user daemon-reload && systemctl --user enable --now $unit
  (on a server, 'sudo loginctl enable-linger $(id -un)' keeps it running without a login), or run
  the agent in the foreground with the unit's ExecStart line. Logs: journalctl --user -u $unit
  once systemd runs it, stderr when run by hand.
EOF
}

fm_join() {
  check_prerequisites
  fm_manifest_add tree "$manifest"
  install_toolchain
  ensure_rpc_server
  say "joining ${#pools[@]} pool(s), installing the service"
  install_service
  printf 'rpc-server %s (%s, RPC protocol %s)\n' "$rpc_server" "$rpc_backend" "$rpc_protocol"
  printf 'leave     %s/scripts/join-pool.sh --leave\n' "$root"
  [ "$manager_missing" = 0 ] || no_manager_note
}

# An agent started by hand is asked to leave; waits (bounded) until its control socket is gone.
stop_foreground_agent() {
  local socket="$state_dir/agent.key.sock" _
  [ -S "$socket" ] || return 0
  agent leave >/dev/null 2>&1 || return 0
  say "asked the running agent to leave (lease holders get their notice)"
  for _ in $(seq 1 150); do
    [ -S "$socket" ] || return 0
    sleep 0.5
  done
  say "the agent has not left after 75 s; removing its files anyway"
}

remove_service() {
  if command -v node >/dev/null && [ -d "$root/node_modules" ]; then
    stop_foreground_agent
    agent uninstall-service
    return
  fi
  if [ "$os" = linux ]; then
    systemctl --user disable --now "$unit" >/dev/null 2>&1 || true
  else
    launchctl unload -w "$service_file" >/dev/null 2>&1 || true
  fi
  rm -f -- "$service_file"
  printf 'removed %s\n' "$service_file"
}

# Stops the agent and removes the service, then everything the manifest lists.
fm_leave() {
  if [ ! -f "$manifest" ]; then
    printf 'nothing to remove: no %s (join-pool.sh never ran from this clone, or left already)\n' "$manifest"
    return 0
  fi
  export PATH="$root/.tools/bin:$PATH"
  if [ -e "$service_file" ] || [ -S "$state_dir/agent.key.sock" ]; then remove_service; fi
  fm_manifest_remove
  printf 'left: the agent is stopped and what join-pool.sh added is removed\n'
}

if [ "$leave" = 1 ]; then fm_leave; else fm_join; fi
