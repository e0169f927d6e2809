#!/usr/bin/env bash
# The contributor install from nothing, on Linux as root: builds a Debian bookworm root filesystem
# (debootstrap minbase plus the build tools) in a temporary folder, copies in the repository's
# committed files only (git archive: no node_modules, no caches, no .tools), and there, as a new
# non-root user, runs `scripts/join-pool.sh --pool <invite made here by mesh-orch pool invite>`.
# Checks: it exits 0 and prints a peer id; the systemd user unit exists and `systemd-analyze
# verify` accepts it; the ggml-rpc-server it built starts on 127.0.0.1 and answers; the unit's
# command, run in the foreground, joins and leaves on SIGTERM; a rerun keeps the identity. Then
# `--leave` while the agent runs: the agent leaves, and the file list of the whole root filesystem
# must be what it was before the install. Prints the time of each phase and, last, one
# JSON line. Exit 0 passed, 1 failed, 77 cannot run here (not root, no debootstrap).
#
#   sudo scripts/clean-root-test.sh
#
# FM_CLEAN_ROOT=0 skips it; FM_CLEAN_ROOT_MIRROR (default http://deb.debian.org/debian),
# FM_CLEAN_ROOT_REF (default HEAD: what is copied in) and FM_CLEAN_ROOT_DEB_CACHE (a folder to keep
# downloaded .deb files in between runs) adjust it. The host's npm registry and proxy settings
# (npm_config_registry, http(s)_proxy, no_proxy) and its extra CA certificates are passed in.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
user=contrib
packages=ca-certificates,curl,openssl,git,tar,g++,cmake,make,systemd

say() { printf '[clean-root] %s\n' "$*" >&2; }
skip() {
  say "SKIP: $*"
  exit 77
}
fail() {
  say "FAIL: $*"
  exit 1
}

[ "${FM_CLEAN_ROOT:-1}" != 0 ] || skip "FM_CLEAN_ROOT=0"
[ "$(uname -s)" = Linux ] || skip "Linux only"
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, mounts)"
if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || skip "debootstrap is not installed and there is no apt-get to install it"
  say "installing debootstrap"
  apt-get install -y -q debootstrap >&2 || skip "debootstrap is not installed and apt-get could not install it"
fi

# The host side needs the toolchain only to make the invite.
# shellcheck source=lib/toolchain.sh
. "$root/scripts/lib/toolchain.sh"
if [ "$(fm_node_major "$(command -v node || echo node)")" -lt 24 ] || [ ! -d "$root/node_modules" ]; then
  fm_toolchain "$root"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fm-clean-root.XXXXXX")
fs="$work/root"
agent_pid=
mounts=(proc sys dev/shm)

# Processes whose root is our chroot were all started by this script: stop them, unmount, and
# remove the folder only when nothing is mounted below it any more.
cleanup() {
  local pid m left
  [ -z "$agent_pid" ] || kill -KILL "$agent_pid" 2>/dev/null || true
  for pid in /proc/[0-9]*; do
    if [ "$(readlink "$pid/root" 2>/dev/null)" = "$fs" ]; then kill -KILL "${pid#/proc/}" 2>/dev/null || true; fi
  done
  for m in dev/shm sys proc; do
    if mountpoint -q "$fs/$m" 2>/dev/null; then umount "$fs/$m" 2>/dev/null || umount -l "$fs/$m" || true; fi
  done
  left=$(awk -v p="$fs/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts)
  if [ -n "$left" ]; then
    say "still mounted, not removing $work: $left"
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s; }
t0=$(now)

say "debootstrap bookworm ($packages) into $fs"
cache_args=()
if [ -n "${FM_CLEAN_ROOT_DEB_CACHE:-}" ]; then
  mkdir -p "$FM_CLEAN_ROOT_DEB_CACHE"
  cache_args=(--cache-dir="$(cd "$FM_CLEAN_ROOT_DEB_CACHE" && pwd)")
fi
mirror="${FM_CLEAN_ROOT_MIRROR:-http://deb.debian.org/debian}"
if ! debootstrap --variant=minbase --include="$packages" ${cache_args[@]+"${cache_args[@]}"} bookworm "$fs" \
  "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -20 "$work/debootstrap.log" >&2
  # Only an unreachable mirror is a reason to skip; any other failure is the test's.
  curl -sfI --max-time 20 "$mirror/dists/bookworm/Release" >/dev/null \
    || skip "no Debian mirror reachable at $mirror"
  fail "debootstrap failed with the mirror reachable (see above)"
fi
t_debootstrap=$(($(now) - t0))

mount -t proc proc "$fs/proc"
mount -t sysfs -o ro sysfs "$fs/sys"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$fs/dev/shm"

# The network of the host: its resolver and the extra CA certificates of its TLS proxy, if any.
cp -L /etc/resolv.conf "$fs/etc/resolv.conf"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$fs/usr/local/share/ca-certificates/"
  chroot "$fs" update-ca-certificates >/dev/null 2>&1
fi
chroot "$fs" useradd --create-home --shell /bin/bash "$user"
uid=$(chroot "$fs" id -u "$user")
gid=$(chroot "$fs" id -g "$user")
home="/home/$user"
mkdir "$fs$home/frankenstein-mesh"
git -C "$root" -c tar.umask=0022 archive --format=tar "${FM_CLEAN_ROOT_REF:-HEAD}" | tar -x -C "$fs$home/frankenstein-mesh"
chown -R "$uid:$gid" "$fs$home/frankenstein-mesh"

invite=$(node "$root/apps/mesh-orch/src/bin.ts" pool invite --pool clean-root --identity "$work/orch.key")

# The environment a contributor's shell would have, plus the host's registry and proxy settings.
user_env=(HOME="$home" USER="$user" LOGNAME="$user" SHELL=/bin/bash LANG=C.UTF-8
  PATH=/usr/local/bin:/usr/bin:/bin)
for var in npm_config_registry NPM_CONFIG_REGISTRY http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY; do
  [ -z "${!var:-}" ] || user_env+=("$var=${!var}")
done
[ -z "${NODE_EXTRA_CA_CERTS:-}" ] || user_env+=(NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt)

# as_user <command...>: run as the contributor inside the root filesystem, in the repository.
as_user() {
  chroot --userspec="$uid:$gid" "$fs" /usr/bin/env -i "${user_env[@]}" /bin/bash -c \
    'cd "$HOME/frankenstein-mesh" && exec "$@"' bash "$@"
}
# isolated <command...>: the same in a network namespace of its own (loopback only), for what
# listens: nothing of it reaches the host's network or other tests. It replaces the calling shell
# (call it in $(...) or with &), so that $! is the pid of the command itself.
isolated() {
  exec unshare --net -- /bin/sh -c 'ip link set lo up && exec "$@"' sh \
    chroot --userspec="$uid:$gid" "$fs" /usr/bin/env -i "${user_env[@]}" /bin/bash -c \
    'cd "$HOME/frankenstein-mesh" && exec "$@"' bash "$@"
}
# The whole root filesystem but the mounts and /run (runtime state, a tmpfs on a booted system,
# where the test's own `systemd-analyze verify` writes as root).
snapshot() {
  (cd "$fs" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev/shm -o -path ./run \) -prune -o \
    \( -type d -printf '%y %m %u %p\n' \) -o -printf '%y %m %u %s %p\n') | LC_ALL=C sort
}
snapshot >"$work/before.txt"

say "as $user: scripts/join-pool.sh --pool <invite>"
t1=$(now)
set +e
{ as_user scripts/join-pool.sh --pool "$invite" 2>&1 1>&3 3>&- | tee "$work/join.err" >&2; } 3>"$work/join.out"
join_status=${PIPESTATUS[0]}
set -e
t_join=$(($(now) - t1))
cat "$work/join.out" >&2
[ "$join_status" = 0 ] || fail "join-pool.sh exited $join_status"
peer=$(sed -n 's/^peer  *\(12D3Koo[1-9A-HJ-NP-Za-km-z]*\)$/\1/p' "$work/join.out")
[ -n "$peer" ] || fail "join-pool.sh printed no peer id"
grep -q '^pools  *clean-root$' "$work/join.out" || fail "join-pool.sh did not print the pool"
grep -q 'no systemd user manager runs here' "$work/join.err" \
  || fail "join-pool.sh did not say that no systemd user manager runs in the chroot"

unit="$home/.config/systemd/user/frankenstein-mesh-agent.service"
[ -f "$fs$unit" ] || fail "no unit at $unit"
chroot "$fs" systemd-analyze verify "$unit" >&2 || fail "systemd-analyze verify refuses $unit"
say "unit $unit: systemd-analyze verify accepts it"

check=$(isolated .tools/bin/node packages/llama/src/cli.ts ensure --rpc-server-only --no-build --check) \
  || fail "the built ggml-rpc-server does not start"
rpc_protocol=$(printf '%s' "$check" | node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8")).rpcProtocol)')
[[ "$rpc_protocol" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "rpc-server did not answer HELLO: $check"
say "ggml-rpc-server started on 127.0.0.1 and answered HELLO (RPC protocol $rpc_protocol)"

# The unit's command, run in the foreground: the agent comes up (one "ready" line), then leaves.
# start_agent <name>: the unit's command in the background; waits (60 s at most) for it to be ready.
start_agent() {
  local exec_start=() arg
  while IFS= read -r -d '' arg; do exec_start+=("$arg"); done < <(node -e '
    const line = /^ExecStart=(.*)$/m.exec(require("fs").readFileSync(process.argv[1], "utf8"))?.[1] ?? ""
    for (const m of line.matchAll(/"((?:[^"\\]|\\.)*)"/g))
      process.stdout.write(m[1].replace(/\\(.)/g, "$1").replaceAll("%%", "%") + "\0")' "$fs$unit")
  [ "${#exec_start[@]}" -gt 3 ] || fail "cannot read ExecStart of $unit"
  isolated "${exec_start[@]}" >"$work/$1.out" 2>"$work/$1.err" &
  agent_pid=$!
  for _ in $(seq 1 120); do
    grep -q '"event":"ready"' "$work/$1.out" && break
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.5
  done
  grep -q "\"event\":\"ready\",\"peerId\":\"$peer\"" "$work/$1.out" \
    || { tail -5 "$work/$1.err" >&2; fail "the unit's command did not join as $peer within 60 s"; }
}
# agent_exit: waits for the agent started last (75 s at most, then kills it); sets agent_status.
agent_exit() {
  for _ in $(seq 1 150); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.5; done
  set +e
  kill -0 "$agent_pid" 2>/dev/null && kill -KILL "$agent_pid"
  wait "$agent_pid"
  agent_status=$?
  set -e
  agent_pid=
}
start_agent agent
kill -TERM "$agent_pid"
agent_exit
[ "$agent_status" = 0 ] || fail "the agent exited $agent_status on SIGTERM"
say "the unit's command joined as $peer and left on SIGTERM"

# A rerun, by the pool's name now (the invite is remembered): same identity, nothing new to claim.
t2=$(now)
cp "$fs$home/frankenstein-mesh/.join-pool.manifest" "$work/manifest.first"
as_user scripts/join-pool.sh --pool clean-root >"$work/rerun.out" 2>"$work/rerun.err" \
  || { tail -20 "$work/rerun.err" >&2; fail "join-pool.sh failed when run again"; }
t_rerun=$(($(now) - t2))
grep -q "^peer  *$peer\$" "$work/rerun.out" || fail "a rerun changed the peer id: $(cat "$work/rerun.out")"
diff "$work/manifest.first" "$fs$home/frankenstein-mesh/.join-pool.manifest" >&2 \
  || fail "a rerun added to the manifest"
say "a rerun (pool by name) kept peer $peer and added nothing, in $t_rerun s"

# --leave while the agent runs (started by hand): it is asked to leave, and it does.
start_agent agent2
t2=$(now)
as_user scripts/join-pool.sh --leave >"$work/leave.out" 2>"$work/leave.err" \
  || { cat "$work/leave.err" >&2; fail "join-pool.sh --leave exited non-zero"; }
t_leave=$(($(now) - t2))
cat "$work/leave.err" "$work/leave.out" >&2
grep -q 'asked the running agent to leave' "$work/leave.err" || fail "--leave did not stop the running agent"
agent_exit
[ "$agent_status" = 0 ] || fail "the agent exited $agent_status when --leave asked it to leave"
snapshot >"$work/after.txt"
if ! diff "$work/before.txt" "$work/after.txt" >"$work/diff.txt"; then
  head -40 "$work/diff.txt" >&2
  fail "the root filesystem differs after --leave ($(grep -c '^[<>]' "$work/diff.txt") lines)"
fi
say "after --leave the root filesystem holds exactly the files it held before ($(wc -l <"$work/before.txt") entries)"

total=$(($(now) - t0))
say "seconds: debootstrap $t_debootstrap, join-pool.sh $t_join, rerun $t_rerun, leave $t_leave, total $total"
printf '{"result":"pass","peerId":"%s","rpcProtocol":"%s","entries":%d,"seconds":{"debootstrap":%d,"join":%d,"rerun":%d,"leave":%d,"total":%d}}\n' \
  "$peer" "$rpc_protocol" "$(wc -l <"$work/before.txt")" "$t_debootstrap" "$t_join" "$t_rerun" "$t_leave" "$total"
