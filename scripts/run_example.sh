#!/usr/bin/env bash
# Sets up the environment and runs the job on the bundled example corpus with the
# bundled models. Outputs go to out/example (replaced on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
HF_HUB_OFFLINE=1 .venv/bin/python -m beam_pipelines.select_data \
  --input=examples/corpus.jsonl --output=out/example --id_field=id \
  --keep_fraction=0.25 --overwrite "$@"
.venv/bin/python examples/show_selection.py out/example
