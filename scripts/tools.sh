#!/usr/bin/env bash
# Command-line tools some tests use, from the Debian archive when missing (idempotent):
#   promtool (package prometheus): checks and unit-tests the generated Prometheus alerting rules.
# Without root or apt-get the tests that need a tool say so and skip.
set -uo pipefail
if ! command -v promtool >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing promtool (Debian package prometheus) for the alerting-rule tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; }; } \
    || echo "warning: could not install promtool; the alerting-rule test will be skipped" >&2
fi
exit 0
