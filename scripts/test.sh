#!/usr/bin/env bash
# Sets up the environment with the test extra and runs the test suite (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "[test]"
bash scripts/install_chromium.sh
# Tests in parallel processes (pytest-xdist), one per core up to 4: most tests run a
# Beam pipeline that keeps one core busy. Pass -n 0 to run them in this process.
cores=$(nproc)
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests -q -p no:cacheprovider \
  -n "$(( cores < 4 ? cores : 4 ))" "$@"
