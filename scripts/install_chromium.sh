#!/usr/bin/env bash
# Headless Chromium from Debian for the console's browser tests (tests/console/, Playwright drives the
# system browser through executable_path, so Playwright's own browser download is never needed).
#
# Idempotent: an installed chromium is kept (well under a second). As root it runs apt-get; otherwise it
# uses sudo when that needs no password, else it prints why and exits 0 so the rest of `make test` runs:
# the browser tests then skip with that reason.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "install_chromium: chromium is not installed and apt-get needs root;" \
       "the console's browser tests will skip (install it with: apt-get install -y chromium)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
