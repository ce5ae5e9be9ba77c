"""report.html's building blocks: text escaped for HTML, numbers as the page prints them,
and tables.
"""
from __future__ import annotations

import html
import math
from typing import Any, Sequence


def _esc(value) -> str:
  return html.escape(str(value), quote=True)


def _num(value, digits: int = 4) -> str:
  if value is None:
    return "–"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, int):
    return f"{value:,}"
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
      return f"{value:.{digits - 1}e}"
    return f"{value:,.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}g}"
  return _esc(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric=()) -> str:
  """A table; a header of empty strings is left out (a key-value table)."""
  head = "".join(f"<th>{_esc(h)}</th>" for h in header) if any(header) else ""
  body = []
  for row in rows:
    cells = []
    for i, cell in enumerate(row):
      if i in numeric:
        cells.append(f'<td class="n">{_num(cell)}</td>')
      else:
        cells.append(f"<td>{cell}</td>")
    body.append("<tr>" + "".join(cells) + "</tr>")
  head = f"<tr>{head}</tr>" if head else ""
  return f"<table>{head}{''.join(body)}</table>"
