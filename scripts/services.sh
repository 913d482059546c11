#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer; start local ones if we can.
set -uo pipefail
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if ! redis_up && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
fi
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start >/dev/null 2>&1 || true
  fi
  for _ in $(seq 50); do pg_up && break; sleep 0.1; done
fi
missing=""
pg_up || missing="$missing PostgreSQL(127.0.0.1:5432)"
redis_up || missing="$missing Redis(127.0.0.1:6379)"
if [ -n "$missing" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "services not running:$missing (CI=true: this is a failure)" >&2
    exit 1
  fi
  echo "warning: services not running:$missing; tests that need them will be skipped" >&2
fi
exit 0
