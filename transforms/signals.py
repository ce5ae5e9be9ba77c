"""The registry of signals: one record per per-document signal (Ask-LLM, perplexity,
embeddings, the quality head, density, clusters, SemDeDup, token counts, ...).

A Signal declares its name (one name: the graph's stage, the model namespace, the cache
namespace, the counters), the signals it reads (computed first), the columns it writes
(name, type, description, whether higher is better, whether the report summarises it),
how its Beam stage is built, and, for a cached signal, its cache codec. Everything that
lists scores is derived from here: the scores a job writes, the Parquet schema of
scores/, the features of selected/ (features.json), the report's descriptions and the
score cache's codecs. NeMo Curator's stages (inputs()/outputs()) and seqio's task
registry are the models.

A simple signal is a pure function of the document (`per_document`): registering it is
the whole of adding it (see tests/test_signals.py); `--signals=NAME` computes it in any
run, besides the signals the sampler needs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

FLOAT, INT, TEXT = "float64", "int64", "string"


@dataclasses.dataclass(frozen=True)
class Column:
  """A score a signal writes on each document (Document.scores[name])."""
  name: str
  dtype: str = FLOAT
  description: str = ""
  higher_is_better: Optional[bool] = None
  # A feature of every selected record (TFRecord, Parquet, JSON Lines; missing: NaN or
  # -1), so that every run's records have the same features; else scores/ only.
  feature: bool = True
  # Summarised in the report (numeric columns only).
  summarised: bool = True


@dataclasses.dataclass(frozen=True)
class Signal:
  """One per-document signal.

  Args:
    name: the one name of the stage, model, cache namespace and counters.
    writes: the columns it writes.
    reads: names of the signals it needs first (the graph orders stages by them).
    stage: "module:function" (or a callable) building its Beam stage,
      `stage(ctx, docs) -> docs` (ctx: signal_stages.StageContext).
    per_document: for a simple signal, a pure function Document -> {column: value}; the
      stage is then the generic one (signal_stages.per_document_stage), cached by its
      columns.
    codec: the score cache's codec (score_cache.Codec) when its outputs are cached.
    version: part of a per_document signal's cache fingerprint: bump it when the
      function changes.
    counter: the counter of documents it scored (metrics.json `counts`), if any.
    model: the option naming its model ("--scorer_model", "--embedding_model"), if any.
    error_column: whether a document it failed on gets `<name>_error` (model signals).
  """
  name: str
  writes: Tuple[Column, ...] = ()
  reads: Tuple[str, ...] = ()
  stage: Any = None
  per_document: Optional[Callable[[Any], Mapping[str, Any]]] = None
  codec: Any = None
  version: str = "1"
  counter: Optional[str] = None
  model: Optional[str] = None
  error_column: bool = False
  description: str = ""

  def columns(self) -> List[Column]:
    """What it writes, with its error column (text, scores/ only) for a model signal."""
    out = list(self.writes)
    if self.error_column:
      out.append(Column(error_field(self.name), TEXT, f"why {self.name} failed on the "
                        "document", feature=False, summarised=False))
    return out


REGISTRY: Dict[str, Signal] = {}


def register(signal: Signal) -> Signal:
  """Adds (or replaces) a signal; its column names must not clash with another's."""
  taken = {c.name: s.name for s in REGISTRY.values() if s.name != signal.name
           for c in s.columns()}
  clash = sorted(c.name for c in signal.columns() if c.name in taken)
  if clash:
    raise ValueError(f"signal {signal.name}: columns {clash} are already written by "
                     f"{sorted({taken[c] for c in clash})}")
  if signal.stage is None and signal.per_document is None:
    raise ValueError(f"signal {signal.name}: give a stage or a per_document function")
  REGISTRY[signal.name] = signal
  _DERIVED.clear()
  return signal


def unregister(name: str) -> None:
  REGISTRY.pop(name, None)
  _DERIVED.clear()


# What is derived from the registry, kept until it changes (the writers ask per record).
_DERIVED: Dict[Any, Any] = {}


def _derived(key, compute):
  if key not in _DERIVED:
    _DERIVED[key] = compute()
  return _DERIVED[key]


def error_field(namespace: str) -> str:
  """The scores/ column holding why a model failed on a document."""
  return f"{namespace}_error"


def get(name: str) -> Signal:
  try:
    return REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown signal {name!r}; known: {', '.join(sorted(REGISTRY))}") \
        from None


def in_order(names: Sequence[str]) -> List[Signal]:
  """The named signals and those they read, each after what it reads (registration order
  among independent ones, so the graph is the same on every launch)."""
  wanted, stack = set(), list(names)
  while stack:
    name = stack.pop()
    if name not in wanted:
      wanted.add(name)
      stack.extend(get(name).reads)
  done: List[Signal] = []
  pending = [s for s in REGISTRY.values() if s.name in wanted]
  while pending:
    ready = [s for s in pending if all(r in {d.name for d in done} for r in s.reads)]
    if not ready:
      raise ValueError(f"signals read each other in a circle: {[s.name for s in pending]}")
    done.append(ready[0])
    pending.remove(ready[0])
  return done


def columns_of(names: Sequence[str]) -> List[Column]:
  return [c for s in in_order(names) for c in s.columns()]


def all_columns() -> List[Column]:
  return [c for s in REGISTRY.values() for c in s.columns()]


def feature_names(dtype: str) -> Tuple[str, ...]:
  """The selected records' features of a type: every registered signal's, so that the
  records of every run have the same features."""
  return _derived(("features", dtype), lambda: tuple(
      c.name for c in all_columns() if c.feature and c.dtype == dtype))


def text_columns() -> Tuple[str, ...]:
  """Every registered text column (`*_error`, duplicate_of, ...)."""
  return _derived("texts", lambda: tuple(c.name for c in all_columns() if c.dtype == TEXT))


def int_columns() -> Tuple[str, ...]:
  return _derived("ints", lambda: tuple(c.name for c in all_columns() if c.dtype == INT))


def descriptions() -> Dict[str, str]:
  return _derived("descriptions", lambda: {c.name: c.description for c in all_columns()
                                           if c.description})


def codecs() -> Dict[str, Any]:
  """{signal name: cache codec} of the cached signals, built when first asked for (so
  that the registry imports nothing heavy: --help reads it)."""
  return _derived("codecs", lambda: {
      s.name: codec for s in REGISTRY.values()
      if (codec := codec_of_signal(s)) is not None})


def is_cached(name: str) -> bool:
  return name in codecs()


def codec_of_signal(signal: Signal):
  """A signal's codec: its own (an object or "module:Class"), or for a simple signal
  whose columns are all floats, one that keeps those columns."""
  codec = signal.codec
  if isinstance(codec, str):
    import importlib
    module, _, name = codec.partition(":")
    return getattr(importlib.import_module(module), name)()
  if codec is None and signal.per_document is not None and signal.writes and all(
      c.dtype == FLOAT for c in signal.writes):
    from transforms.score_cache import ColumnsCodec
    return ColumnsCodec(signal.name, [c.name for c in signal.writes])
  return codec


# The built-in signals register themselves here, so that any import of the registry
# sees them (at the end: they use the names above).
from transforms import builtin_signals  # noqa: E402,F401  pylint: disable=wrong-import-position
