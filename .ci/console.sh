#!/usr/bin/env bash
# The console's CI needs: Debian's headless chromium for the `necroui serve` page check
# (tests/integration/test_serve.py). textual-serve comes with the test extras.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  echo "=== installing chromium (necroui serve check)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
chromium --version
