#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need on a
# fresh Debian machine, skipping what is already there, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# Independent readers of the lake (DuckDB, pyarrow) used by the interop tests.
if ! python3 -c 'import duckdb, pyarrow' 2>/dev/null; then
  log "installing duckdb and pyarrow (pip)"
  python3 -m pip install --quiet --disable-pip-version-check duckdb pyarrow
fi

log "cargo test (debug build, all crates, doctests and examples)"
cargo test --workspace --locked "$@"
