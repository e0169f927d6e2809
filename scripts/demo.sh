#!/usr/bin/env bash
# The demo, from nothing: toolchain, dependencies, llama.cpp binaries (built on first run), a
# generated model, then a completion served over two rpc-servers. Flags go to scripts/demo.ts.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/toolchain.sh
. "$root/scripts/lib/toolchain.sh"
fm_toolchain "$root"
exec node "$root/scripts/demo.ts" "$@"
