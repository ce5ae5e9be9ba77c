"""Benchmarks: each module is run from the repository root as
`HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.NAME` (run on demand, not in CI);
benchmarks/harness.py holds what they share. A module here never takes the name of a
module of beam_pipelines/, transforms/, models/ or scripts/: such a benchmark is named
NAME_bench.py (quality_head_bench, score_cache_bench, output_formats_bench)."""
