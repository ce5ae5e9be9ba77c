#!/usr/bin/env bash
# Sets up the environment with the test extra and runs the test suite (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "[test]"
bash scripts/install_chromium.sh
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
