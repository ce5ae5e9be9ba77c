"""--estimate_only's output: a table for people (--estimate_format=table) or the JSON of
estimate.estimate (--estimate_format=json)."""
from __future__ import annotations

import json
from typing import Dict, List

FORMATS = ("table", "json")


def _num(value, digits: int = 0) -> str:
  if value is None:
    return "-"
  if isinstance(value, float) and digits:
    return f"{value:,.{digits}f}"
  return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _rows(stages: List[Dict]) -> List[List[str]]:
  rows = [["stage", "documents", "tokens", "GPU-hours", "tokens/s/GPU", "rate"]]
  for s in stages:
    rows.append([s["stage"], _num(s["documents"]), _num(s["tokens"]), _num(s["gpu_hours"]),
                 _num(s["gpu_tokens_per_second"], 1), s["rate"]])
  return rows


def _table(rows: List[List[str]]) -> List[str]:
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
  lines = []
  for r in rows:
    cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
    lines.append("  ".join(cells + [r[-1]]))
  return lines


def _total(part: Dict) -> str:
  cost = part.get("estimated_gpu_cost")
  return (f"total GPU-hours: {_num(part.get('estimated_gpu_hours'))}"
          + (f" (cost {_num(cost)})" if cost is not None else ""))


def render(result: Dict, fmt: str = "table") -> str:
  if fmt == "json":
    return json.dumps(result, indent=2)
  lines = [f"Estimate for --sampler={result['sampler']}: about "
           f"{result['estimated_documents']:,} documents ({result['input_bytes']:,} input "
           f"bytes; {result['sample_documents']:,} sampled; {result['note']})", ""]
  lines += _table(_rows(result["stages"]))
  details = [f"  {s['stage']}: {s['detail']}" for s in result["stages"] if s["detail"]]
  lines += ["", _total(result)] + (["", "Stages:"] + details if details else [])
  without = result.get("without_cascade")
  if without is not None:
    lines += ["", "The same run without the cascade (the judge on every document):"]
    lines += _table(_rows(without["stages"])) + [_total(without)]
  lines += ["", "A measured rate (--gpu_tokens_per_second, from a short run of the same "
                "model on the same GPU) replaces an assumed one."]
  return "\n".join(lines)
