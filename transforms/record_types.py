"""The small record types that flow through the pipeline: the valid Document, the Rejected
record and the RawRecord read from a file; the constants that name rejection reasons and
scores; and plain functions on them (ids, safe text, excerpts, the rows of scores/).
transforms/records.py re-exports all of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Dict, Mapping, Optional

# Rejection reasons: the short codes used in rejected/ and in the counters
# (`rejected:<reason>`).
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_a_json_object"
MISSING_TEXT_FIELD = "missing_text_field"
TEXT_NOT_STRING = "text_not_a_string"
EMPTY_TEXT = "empty_text"
INVALID_UTF8 = "invalid_utf8"
TOO_LARGE = "too_large"
INVALID_ID = "invalid_id"
INVALID_TFRECORD = "invalid_tfrecord"
UNREADABLE_FILE = "unreadable_file"
# A matched input path that is never opened (transforms/input_files.py): gone by the time
# it is read (deleted, a broken link), or not a regular file (a pipe, socket, device or
# directory), which could block the reader or means nothing as records.
MISSING_FILE = "missing_file"
NOT_A_REGULAR_FILE = "not_a_regular_file"
# The text holds a lone surrogate (a JSON escape like "\ud800"): not valid Unicode, so it
# cannot be written as UTF-8 or tokenized.
INVALID_TEXT = "invalid_text"
# Belt and braces: any exception nobody foresaw while parsing one record. It is a bug to
# fix, but it must cost one record, not the job.
INVALID_RECORD = "invalid_record"
# A JSON object repeats a key the job reads (text, id, teacher or --keep_fields): Python
# keeps the last value, other parsers the first, so which one is meant is unclear.
DUPLICATE_KEY = "duplicate_key"
# A CSV/TSV row whose number of fields differs from the header's.
INVALID_ROW = "invalid_row"

# --max_id_bytes default. Every rank boundary is a sort key holding an id, and the
# P + 1 boundaries go to every worker: at 1 KiB an id costs at most 100 MB there at the
# largest --num_rank_partitions, where one 5 MB id took a 3-document job past 8 GB. A
# hash id is 32 bytes; most URLs fit.
MAX_ID_BYTES = 1024

EXCERPT_CHARS = 200
# Score names the transforms set (the registry of signals, transforms/builtin_signals.py,
# declares every score's type and meaning; the features of the selected records come
# from it).
ASK_LLM_SCORE = "ask_llm_score"
QUALITY_SCORE = "quality_score"
CLUSTER = "cluster"
CLUSTER_DISTANCE = "cluster_distance"
DUPLICATE_OF = "duplicate_of"
# --dedup (transforms/dedup.py): the kept copy's id and exact | minhash. SemDeDup's
# duplicate_of is another column: an embedding neighbour that was still scored.
COPY_OF = "copy_of"
COPY_KIND = "copy_kind"
# An integer score where the run did not compute it (e.g. the cluster), in selected/.
MISSING_INT = -1
# --input_format values (transforms/read.py reads them).
INPUT_FORMATS = ("auto", "jsonl", "text", "tfrecord", "parquet", "arrow", "csv", "tsv", "wet")


@dataclasses.dataclass(frozen=True)
class Document:
  """A valid input document. Scores are attached as it flows, so no join is needed."""
  id: str
  text: str
  source: str
  scores: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Extra numeric fields carried from the input record (e.g. a teacher score).
  fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Input fields copied to the outputs (--keep_fields): JSON values, None when missing.
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # The sentence embedding (float32 vector) while density is computed; dropped after.
  embedding: Any = dataclasses.field(default=None, compare=False, repr=False)
  # Cluster-balanced samplers: whether the document is within its cluster's quota
  # (transforms/cluster_sampling.py); the selection's sort key reads it. Not written.
  in_quota: Optional[bool] = dataclasses.field(default=None, compare=False, repr=False)

  def with_scores(self, **scores) -> "Document":
    merged = dict(self.scores)
    merged.update(scores)
    return dataclasses.replace(self, scores=merged)


@dataclasses.dataclass(frozen=True)
class Rejected:
  """An input record that could not be used, with the reason."""
  source: str
  reason: str
  excerpt: str
  detail: str = ""

  def to_json(self) -> str:
    out = {"source": self.source, "reason": self.reason, "excerpt": self.excerpt}
    if self.detail:
      out["detail"] = self.detail
    return json.dumps({k: safe_str(v) for k, v in out.items()}, ensure_ascii=False,
                      allow_nan=False)


@dataclasses.dataclass(frozen=True)
class RawRecord:
  """One record as read from a file, before validation."""
  source: str          # "path:line" or "path:#record"
  payload: bytes
  fmt: str             # jsonl | text | tfrecord | wet (a JSON object, from readers.py)


def text_id(text: str) -> str:
  """The id of a document without an id field: a hash of its text."""
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def is_valid_unicode(s: str) -> bool:
  """False when `s` holds a lone surrogate, which json.loads lets through from "\\ud800"."""
  try:
    s.encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def safe_str(s: str) -> str:
  """`s` with lone surrogates spelt as \\udXXX escapes, so it can be written as UTF-8."""
  return s if is_valid_unicode(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


def excerpt(payload: Any, limit: int = EXCERPT_CHARS) -> str:
  if isinstance(payload, bytes):
    payload = payload[: limit * 4].decode("utf-8", errors="replace")
  payload = str(payload)
  payload = payload if len(payload) <= limit else payload[:limit] + "..."
  return safe_str(payload)


def score_record(doc: Document, selected: bool, rank: Optional[int]) -> Dict[str, Any]:
  """One row of scores/ as a dict: the id, where it was read (ids may repeat), every score,
  and the selection outcome. Written as a JSON line (score_row) or a Parquet row."""
  row = {"id": doc.id, "source": safe_str(doc.source)}
  # JSON has no Infinity/NaN: a non-finite score (e.g. the perplexity of a document too
  # short to predict) is written as null; copied fields hold none
  # (record_parsing._copied_fields).
  row.update({k: strict_json(v) for k, v in doc.scores.items()})
  row.update({k: strict_json(v) for k, v in doc.extra.items()})
  row["selected"] = selected
  row["rank"] = rank
  return row


def strict_json(value):
  """`value` with every non-finite float in it as None (null)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  return value


def score_row(doc: Document, selected: bool, rank: Optional[int]) -> str:
  """One line of scores/ (see score_record): strict JSON."""
  return json.dumps(score_record(doc, selected, rank), ensure_ascii=False, allow_nan=False)
