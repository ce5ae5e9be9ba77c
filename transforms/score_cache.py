"""The score cache: every model output, kept as soon as it is produced, so that a crash or
a new selection never pays for inference twice.

An entry is keyed by the document's content (a 16-byte BLAKE2b hash of its text) and
lives under a fingerprint of everything the output depends on (models/fingerprint.py):

    CACHE/fingerprints/<model>-<fingerprint>.json   the settings behind a fingerprint
    CACHE/<model>/<fingerprint>/part-*.parquet      entries: key + the model's output

Files are small Parquet tables written under a temporary name and renamed, so readers
never see half a file. They are written from the inference stage itself (after a shuffle
nothing runs until the whole stage is done, so a cache written later would be empty when
a job dies during inference), flushed by count and by time. A retried bundle may write an
entry twice; readers keep one. An unreadable file is skipped with a warning and a counter
and its documents are scored again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
import uuid
from typing import Any, Dict, Iterator, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import metrics
from transforms.cache_codecs import (  # noqa: F401  (re-exported)
    KEY, KEY_BYTES, AskLLMCodec, Codec, ColumnsCodec, EmbeddingCodec, PerplexityCodec,
    _float_columns, _keys, round_embedding, valid_embedding)
from transforms.records import Document
from transforms.output_files import write_bytes_atomic, write_json_atomic

_LOG = logging.getLogger(__name__)

FINGERPRINTS_DIR = "fingerprints"
FORMAT_VERSION = "1"
# Documents and seconds between flushes: a kill -9 loses at most this much inference.
DEFAULT_FLUSH_DOCS = 1000
DEFAULT_FLUSH_SECONDS = 30.0


def text_key(text: str) -> bytes:
  """The cache key of a document: its content, not its id (ids may repeat or change)."""
  return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest()


@dataclasses.dataclass(frozen=True)
class CacheSpec:
  """Where one model's entries live, and when to flush (small and picklable).

  Args:
    root: the cache directory (--cache), local or gs://.
    namespace: the model stage (ask_llm, perplexity, embeddings).
    fingerprint: settings_fingerprint of `settings`.
    settings: what the model's output depends on (written next to the entries).
  """
  root: str
  namespace: str
  fingerprint: str
  settings: Dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
  flush_docs: int = DEFAULT_FLUSH_DOCS
  flush_seconds: float = DEFAULT_FLUSH_SECONDS

  @property
  def directory(self) -> str:
    return FileSystems.join(self.root, self.namespace, self.fingerprint)

  @property
  def settings_file(self) -> str:
    return FileSystems.join(self.root, FINGERPRINTS_DIR,
                            f"{self.namespace}-{self.fingerprint}.json")


def codec_of(namespace: str) -> Codec:
  """The cache codec of a signal (declared in the registry, transforms/signals.py)."""
  from transforms import signals
  return signals.codecs()[namespace]


class _Codecs:
  """CODECS[namespace], read from the registry when used (a signal may be added later)."""

  def __getitem__(self, namespace):
    return codec_of(namespace)

  def __contains__(self, namespace):
    from transforms import signals
    return namespace in signals.codecs()


CODECS = _Codecs()


def table_bytes(table) -> bytes:
  import pyarrow as pa
  import pyarrow.parquet as pq
  sink = pa.BufferOutputStream()
  # Says what the file is to a reader who finds it alone.
  table = table.replace_schema_metadata({"select_data_cache": FORMAT_VERSION})
  pq.write_table(table, sink, compression="zstd")
  return sink.getvalue().to_pybytes()


def read_table(data: bytes):
  import pyarrow as pa
  import pyarrow.parquet as pq
  return pq.read_table(pa.BufferReader(data))


def new_part_name() -> str:
  # Time first: a listing shows the order entries were written in.
  return f"part-{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}.parquet"


# --- Beam edges -------------------------------------------------------------------------

class _ReadCacheFile(beam.DoFn):
  """A cache file's entries as (key, row); a file that cannot be read is skipped (with a
  warning and a counter) and its documents are scored again."""

  def __init__(self, namespace: str):
    self._ns = namespace

  def process(self, metadata):
    codec = CODECS[self._ns]
    try:
      with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        table = read_table(f.read())
      entries = list(codec.rows(table))
    except Exception as e:  # pylint: disable=broad-except
      _LOG.warning("score cache: skipping unreadable file %s (%s: %s); its documents are "
                   "scored again", metadata.path, type(e).__name__, str(e)[:200])
      metrics.counter(metrics.CACHE_UNREADABLE_PREFIX + self._ns).inc()
      return
    invalid = 0
    for key, row in entries:
      if row is None:
        invalid += 1
      else:
        yield key, row
    if invalid:
      metrics.counter(metrics.CACHE_INVALID_PREFIX + self._ns).inc(invalid)


class ReadCacheEntries(beam.PTransform):
  """PBegin -> (key, row) of every entry under a CacheSpec (duplicates included)."""

  def __init__(self, spec: CacheSpec):
    super().__init__()
    self._spec = spec

  def expand(self, pbegin):
    from apache_beam.io.fileio import EmptyMatchTreatment, MatchAll
    pattern = FileSystems.join(self._spec.directory, "*.parquet")
    return (pbegin
            | "CachePattern" >> beam.Create([pattern])
            | "MatchCacheFiles" >> MatchAll(EmptyMatchTreatment.ALLOW)
            # Spreads the files over workers (a match yields them all from one).
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadCacheFiles" >> beam.ParDo(_ReadCacheFile(self._spec.namespace)))


class _SplitCached(beam.DoFn):
  """(key, {docs, cached}) -> documents with their cached row attached (main output), or
  documents that still need the model (`misses`)."""

  def __init__(self, namespace: str, attach):
    self._ns = namespace
    self._attach = attach

  def setup(self):
    self._hits = metrics.counter(metrics.FROM_CACHE_PREFIX + self._ns)

  def process(self, element):
    _, grouped = element
    # Duplicates (a retried bundle, two runs) hold the same result: any one will do.
    row = next(iter(grouped["cached"]), None)
    for doc in grouped["docs"]:
      if row is None:
        yield beam.pvalue.TaggedOutput("misses", doc)
      else:
        self._hits.inc()
        yield self._attach(doc, row)


class LookUpCache(beam.PTransform):
  """Documents -> {"cached": documents scored from the cache, "misses": the others}.

  A join of documents with cache entries by content key (a shuffle), so that it scales
  to any number of entries; no side input holds them all.
  """

  def __init__(self, spec: CacheSpec, attach):
    super().__init__()
    self._spec = spec
    self._attach = attach

  def expand(self, docs):
    keyed = docs | "KeyByText" >> beam.Map(lambda d: (text_key(d.text), d))
    entries = docs.pipeline | "ReadCache" >> ReadCacheEntries(self._spec)
    split = ({"docs": keyed, "cached": entries}
             | "JoinWithCache" >> beam.CoGroupByKey()
             | "SplitCached" >> beam.ParDo(
                 _SplitCached(self._spec.namespace, self._attach)).with_outputs(
                     "misses", main="cached"))
    return {"cached": split.cached, "misses": split.misses}


def write_entries(spec: CacheSpec, keys, rows) -> str:
  """Writes one cache file atomically (temporary name, then rename); returns its path."""
  final = FileSystems.join(spec.directory, new_part_name())
  write_bytes_atomic(final, table_bytes(CODECS[spec.namespace].table(keys, rows)))
  return final


class WriteToCache(beam.DoFn):
  """Passes scored documents through and keeps their model outputs in the cache,
  flushing every `spec.flush_docs` documents or `spec.flush_seconds`, and at the end of
  each bundle. Fused with the inference step (no shuffle between them), so what a killed
  job had scored is on disk up to the last flush. A failed write costs only the cache
  entries (a warning and a counter), never the run."""

  def __init__(self, spec: CacheSpec):
    self._spec = spec

  def setup(self):
    self._codec = CODECS[self._spec.namespace]
    self._keys, self._rows = [], []
    self._last_flush = time.time()
    self._written = metrics.counter(metrics.CACHE_WRITTEN_PREFIX + self._spec.namespace)
    self._failed = metrics.counter(metrics.CACHE_WRITE_FAILED_PREFIX + self._spec.namespace)

  def process(self, doc: Document):
    row = self._codec.row(doc)
    if row is not None:
      self._keys.append(text_key(doc.text))
      self._rows.append(row)
    if (len(self._keys) >= self._spec.flush_docs
        or (self._keys and time.time() - self._last_flush >= self._spec.flush_seconds)):
      self._flush()
    yield doc

  def finish_bundle(self):
    self._flush()

  def _flush(self):
    keys, rows = self._keys, self._rows
    self._keys, self._rows = [], []
    self._last_flush = time.time()
    if not keys:
      return
    try:
      write_entries(self._spec, keys, rows)
      self._written.inc(len(keys))
    except Exception as e:  # pylint: disable=broad-except
      self._failed.inc(len(keys))
      _LOG.warning("score cache: could not write %d entries under %s (%s: %s); the run "
                   "goes on, a rerun scores them again", len(keys), self._spec.directory,
                   type(e).__name__, str(e)[:200])


def write_settings(spec: CacheSpec) -> None:
  """Writes the settings file of a fingerprint (atomically; same content every time)."""
  write_json_atomic(spec.settings_file, {
      "model": spec.namespace, "fingerprint": spec.fingerprint,
      "settings": spec.settings, "format": FORMAT_VERSION})


def other_fingerprints(spec: CacheSpec):
  """Fingerprints of the same model stage in the same cache other than `spec`'s: their
  entries are ignored by this run (and kept)."""
  pattern = FileSystems.join(spec.root, FINGERPRINTS_DIR, f"{spec.namespace}-*.json")
  try:
    found = FileSystems.match([pattern])[0].metadata_list
  except Exception:  # pylint: disable=broad-except
    return []
  names = sorted(m.path.rsplit("/", 1)[-1][len(spec.namespace) + 1:-len(".json")]
                 for m in found)
  return [n for n in names if n != spec.fingerprint and "." not in n]
