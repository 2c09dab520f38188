#!/usr/bin/env bash
# Contract guard: the current protos/ must not break any earlier published version of the contract.
# Checks against every commit that changed protos/ (a fresh clone of main has no separate "main" to
# compare with, and comparing with each earlier version also catches add-then-remove across commits).
# BUF_BREAKING_AGAINST=<buf input> checks against one input instead (e.g. '.git#branch=main' in a PR).
set -euo pipefail
cd "$(dirname "$0")/.."
buf=node_modules/.bin/buf
if [[ -n "${BUF_BREAKING_AGAINST:-}" ]]; then
  exec "$buf" breaking --against "$BUF_BREAKING_AGAINST"
fi
checked=0
for rev in $(git log --format=%H -- protos/); do
  "$buf" breaking --against ".git#ref=${rev},subdir=." || { echo "contract break against ${rev}"; exit 1; }
  checked=$((checked + 1))
done
echo "contract-check: no breaking change against ${checked} earlier contract version(s)"
