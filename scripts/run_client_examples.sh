#!/usr/bin/env bash
# Run the Go, TypeScript and Java client examples against a running gateway and check what they print
# and their exit codes (tests/clients/harness.py holds the expectations).
#
#   scripts/run_client_examples.sh --addr 127.0.0.1:50070 --api-key demo-key
#       [--lang go,ts,java] [--mode auto|journey|unimplemented|backends_down|unreachable]
#       [--timeout 20] [--require-all]
#
# --mode auto (default) probes the gateway: a skeleton that answers UNIMPLEMENTED is checked as such,
# anything else must complete the whole journey (ingest, find it by text, INVALID_ARGUMENT,
# UNAUTHENTICATED, delete). The key needs the search, ingest and delete roles. --require-all fails
# when an example is not built (CI); otherwise missing ones are skipped with the reason.
# Build the examples first: scripts/gen_clients.sh. Exit status 0 when every example passed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
cd "$REPO"
exec "$PY" -m tests.clients.harness "$@"
