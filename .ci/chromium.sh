#!/usr/bin/env bash
# Headless Chromium (Debian's package) for the viewer's browser test (tests/test_viewer_browser.py).
# Idempotent; run as root before the test suite. Does nothing when chromium is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
command -v chromium >/dev/null
