#!/usr/bin/env bash
# The whole test suite, from nothing: toolchain, dependencies, llama.cpp binaries (built once per
# llama.cpp commit into ~/.cache/frankenstein-mesh, ~10 minutes on 2 cores), then every check.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/toolchain.sh
. "$root/scripts/lib/toolchain.sh"
fm_toolchain "$root"
cd "$root"

step() { printf '\n== %s\n' "$*" >&2; }
step "llama.cpp binaries"
node packages/llama/src/cli.ts ensure --check
step "type check"
pnpm -s typecheck
step "lint"
pnpm -s lint
step "format"
pnpm -s format:check
step "unit tests"
pnpm -s test:unit
step "browser for the dashboard test (Debian's chromium)"
if [ -x /usr/bin/chromium ]; then
  /usr/bin/chromium --version 2>/dev/null || true
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
    || echo "chromium could not be installed: test/dashboard.spec.ts will skip" >&2
else
  echo "no /usr/bin/chromium, and not root with apt-get to install it: test/dashboard.spec.ts will skip" >&2
fi
# test/clean-root.spec.ts builds a Debian root filesystem with debootstrap (FM_CLEAN_ROOT=0 skips it).
if [ "${FM_CLEAN_ROOT:-1}" != 0 ] && [ "$(id -u)" = 0 ] && ! command -v debootstrap >/dev/null \
  && command -v apt-get >/dev/null; then
  step "installing debootstrap (for test/clean-root.spec.ts)"
  apt-get install -y -q debootstrap >&2 || (apt-get update -q >&2 && apt-get install -y -q debootstrap >&2) \
    || printf 'debootstrap could not be installed: test/clean-root.spec.ts will skip\n' >&2
fi
step "end-to-end tests (real rpc-server and llama-server)"
pnpm -s test:e2e
