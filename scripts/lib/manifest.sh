# What scripts/join-pool.sh added, so that --leave removes exactly that. One line per path:
# `tree<TAB>path` (created by us, removed with its content) or `dir<TAB>path` (a folder created to
# hold one, removed only when empty). A path is written down *before* it is created, so that an
# install killed half-way still leaves a manifest that covers it. Needs $manifest.

fm_manifest_add() {
  local line
  line=$(printf '%s\t%s' "$1" "$2")
  touch "$manifest"
  grep -Fxq -- "$line" "$manifest" || printf '%s\n' "$line" >>"$manifest"
}

# fm_manifest_has <kind> <path>: whether the manifest lists it.
fm_manifest_has() { [ -f "$manifest" ] && grep -Fxq -- "$(printf '%s\t%s' "$1" "$2")" "$manifest"; }

# fm_manifest_claim <path>...: each path that does not exist yet is ours once created, and so is
# every missing folder above it.
fm_manifest_claim() {
  local path dir
  for path in "$@"; do
    if [ -z "$path" ] || [ -e "$path" ] || [ -L "$path" ]; then continue; fi
    fm_manifest_add tree "$path"
    dir=$(dirname "$path")
    while [ "$dir" != / ] && [ ! -e "$dir" ]; do
      fm_manifest_add dir "$dir"
      dir=$(dirname "$dir")
    done
  done
}

# fm_manifest_entries <dir>: its entries, one a line (nothing when it does not exist).
fm_manifest_entries() { [ -d "$1" ] && (cd "$1" && ls -A) || true; }

# fm_manifest_claim_new <dir> <entries before>: entries that appeared in <dir> since are ours
# (for folders that only this project writes to, such as .tools and our cache).
fm_manifest_claim_new() {
  local dir=$1 before=$2 entry
  while IFS= read -r entry; do
    [ -n "$entry" ] || continue
    case "$entry" in *.lock | *.tmp-* | *.partial*) continue ;; esac
    # A here-string, not a pipe: under pipefail, grep -q quitting early fails the pipe's printf,
    # and an entry that was there before would be claimed (and removed by --leave).
    grep -Fxq -- "$entry" <<<"$before" || fm_manifest_add tree "$dir/$entry"
  done < <(fm_manifest_entries "$dir")
}

# fm_manifest_paths <kind> <manifest text>: the recorded paths of one kind.
fm_manifest_paths() {
  local kind path
  while IFS=$'\t' read -r kind path; do
    [ "$kind" = "$1" ] && printf '%s\n' "$path"
  done <<<"$2"
  return 0
}

# A manifest is data, not trust: refuse to remove anything but a plain absolute path below a folder
# (no `.` or `..` parts, no doubled or trailing slash), and never the home or the repository itself.
fm_manifest_safe() {
  case "$1" in
    /*/*) ;;
    *) return 1 ;;
  esac
  case "$1/" in
    */./* | */../* | *//*) return 1 ;;
  esac
  [ "$1" != "$HOME" ] && [ "$1" != "${root:-}" ]
}

# fm_manifest_remove: removes what the manifest lists (trees, then their folders when empty,
# deepest first) and the manifest itself; says what it removed.
fm_manifest_remove() {
  local path entries
  entries=$(cat "$manifest")
  while IFS= read -r path; do
    if [ -e "$path" ] || [ -L "$path" ]; then
      fm_manifest_safe "$path" || {
        printf '[join-pool] not removing %s (not a path this script creates)\n' "$path" >&2
        continue
      }
      rm -rf -- "$path"
      printf 'removed   %s\n' "$path"
    fi
  done < <(fm_manifest_paths tree "$entries")
  while IFS= read -r path; do
    if [ -d "$path" ] && fm_manifest_safe "$path" && rmdir -- "$path" 2>/dev/null; then
      printf 'removed   %s/\n' "$path"
    fi
  done < <(fm_manifest_paths dir "$entries" | sort -r)
  rm -f -- "$manifest"
}
