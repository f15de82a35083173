# Shared helpers for the set-up, start and test scripts. Sourced, not run.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMPS="$ROOT/.setup-stamps"
export PATH="$VENV/bin:$ROOT/node_modules/.bin:$PATH"

_step_name=""
_step_start=0

# step "name" "how to fix it if it fails": prints the step and remembers it for the failure message.
step() {
  _step_name="$1"
  _step_fix="$2"
  _step_start=$(date +%s)
  printf '==> %s\n' "$_step_name"
}

step_done() {
  printf '    ok (%ss)\n' "$(($(date +%s) - _step_start))"
}

step_skip() {
  printf '    up to date: %s\n' "$1"
}

on_failure() {
  local code=$?
  if [ -n "$_step_name" ]; then
    printf '\nSet-up failed at step: %s (exit %s)\nHow to fix: %s\n' "$_step_name" "$code" "$_step_fix" >&2
  fi
  exit "$code"
}

# hash_of FILES...: one hash over the contents of the given files (missing files count as empty).
hash_of() {
  cat "$@" 2>/dev/null | sha256sum | cut -c1-32
}

# hash_tree DIR...: one hash over every tracked-looking source file below the folders.
hash_tree() {
  find "$@" -type f \( -name '*.ts' -o -name '*.tsx' -o -name '*.json' -o -name '*.css' -o -name '*.js' -o -name '*.svg' \) \
    -not -path '*/node_modules/*' -not -path '*/dist/*' -not -path '*/lib/*' -not -path '*/labextension/*' \
    -not -name '*.tsbuildinfo' -print0 2>/dev/null | sort -z | xargs -0 cat 2>/dev/null | sha256sum | cut -c1-32
}

stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s' "$2" >"$STAMPS/$1"; }
