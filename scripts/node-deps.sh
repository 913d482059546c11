#!/usr/bin/env bash
# Install the local AWS stand-ins the tests use (npm packages), once, into .cache/node.
# Idempotent: a second run with the same versions does nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/node"
want="kinesis-local@0.6.2 dynalite@4.0.0"
stamp="$dir/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
command -v npm >/dev/null || { echo "npm not found: install Node.js 18+ to run the Kinesis tests" >&2; exit 1; }
mkdir -p "$dir"
npm install --silent --no-audit --no-fund --prefix "$dir" $want >/dev/null
echo "$want" > "$stamp"
