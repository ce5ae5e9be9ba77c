"""The type of each --keep_fields field in the outputs, unified over every record of the
run (a Beam combine, so no record's arrival order matters) and how each format holds it.

  bool, int, float, string: every non-null value is of that type (int and float mix as
    float); Parquet bool/int64/float64/string, TFRecord int64 (0/1)/int64/float/bytes.
  nested: objects and lists whose Arrow types merge (keys missing in some records read
    back as null); a Parquet struct or list, JSON text (bytes) in TFRecord.
  json: anything else (a string in one record and a number in another, objects whose keys
    clash in type, integers beyond int64); JSON text in Parquet and TFRecord.
JSON Lines hold every value as it was read (JSON is untyped). A field null or missing in
every record is a string column of nulls. Pure Python and pyarrow, no Beam.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Sequence

import pyarrow as pa

BOOL, INT, FLOAT, STRING, NESTED, JSON = "bool", "int", "float", "string", "nested", "json"
KINDS = (BOOL, INT, FLOAT, STRING, NESTED, JSON)
_INT64 = (-(1 << 63), (1 << 63) - 1)
# What the fields' kinds are while unifying: a kind, or (NESTED, its Arrow type); None
# while no value has been seen.
State = Any


def _nested_type(value) -> State:
  try:
    kind = pa.array([value]).type
  except (pa.ArrowException, OverflowError, ValueError, TypeError):
    return JSON  # e.g. a list of a string and a number
  return (NESTED, _sorted(kind))


def _sorted(kind: pa.DataType) -> pa.DataType:
  """`kind` with every struct's fields in name order: the type does not depend on which
  record came first (merging keeps the first record's order)."""
  if pa.types.is_struct(kind):
    fields = sorted((kind.field(i) for i in range(kind.num_fields)), key=lambda f: f.name)
    return pa.struct([f.with_type(_sorted(f.type)) for f in fields])
  if pa.types.is_list(kind):
    return pa.list_(kind.value_field.with_type(_sorted(kind.value_type)))
  if pa.types.is_large_list(kind):
    return pa.large_list(kind.value_field.with_type(_sorted(kind.value_type)))
  return kind


def state_of(value) -> State:
  """The kind of one value (None for null)."""
  if value is None:
    return None
  if isinstance(value, bool):
    return BOOL
  if isinstance(value, int):
    return INT if _INT64[0] <= value <= _INT64[1] else JSON
  if isinstance(value, float):
    return FLOAT
  if isinstance(value, str):
    return STRING
  if isinstance(value, (dict, list)):
    return _nested_type(value)
  return JSON


def merge(a: State, b: State) -> State:
  """The kind holding values of both kinds (commutative and associative)."""
  if a is None or a == b:
    return b if a is None else a
  if b is None:
    return a
  if {a, b} == {INT, FLOAT}:
    return FLOAT
  if isinstance(a, tuple) and isinstance(b, tuple):
    try:
      merged = pa.unify_schemas([pa.schema([("v", a[1])]), pa.schema([("v", b[1])])],
                                promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError):
      return JSON
    return (NESTED, _sorted(merged.field("v").type))
  return JSON


def merge_all(states: Mapping[str, State], more: Mapping[str, State]) -> Dict[str, State]:
  return {k: merge(states.get(k), more.get(k)) for k in dict.fromkeys([*states, *more])}


def states_of(extra: Mapping[str, Any], names: Sequence[str]) -> Dict[str, State]:
  return {name: state_of(extra.get(name)) for name in names}


def _writable(kind: pa.DataType) -> bool:
  """Whether Parquet can hold the type: no struct without fields (an empty object)."""
  if pa.types.is_struct(kind):
    return kind.num_fields > 0 and all(_writable(kind.field(i).type)
                                       for i in range(kind.num_fields))
  if pa.types.is_list(kind) or pa.types.is_large_list(kind):
    return _writable(kind.value_type)
  return True


def final_kinds(states: Mapping[str, State], names: Sequence[str]) -> Dict[str, Any]:
  """{name: kind}, a nested one as (NESTED, its Arrow type); all-null fields are strings."""
  out = {}
  for name in names:
    state = states.get(name)
    if state is None:
      state = STRING
    elif isinstance(state, tuple) and not _writable(state[1]):
      state = JSON
    out[name] = state
  return out


def kind_name(kind) -> str:
  return kind[0] if isinstance(kind, tuple) else kind


def json_text(value) -> str:
  from transforms.record_types import safe_str
  return safe_str(json.dumps(value, ensure_ascii=False, default=str))


def parquet_type(kind) -> pa.DataType:
  if isinstance(kind, tuple):
    return kind[1]
  return {BOOL: pa.bool_(), INT: pa.int64(), FLOAT: pa.float64()}.get(kind, pa.string())


def parquet_value(kind, value):
  """`value` as the cell of a Parquet column of `kind` (the kind holds it: final_kinds)."""
  if value is None:
    return None
  name = kind_name(kind)
  if name == FLOAT:
    return float(value)
  if name == JSON:
    return json_text(value)
  if name == STRING:
    return _text(value)
  return value


def _text(value) -> str:
  """A string as it is; another value (only where the caller gave no kinds) as JSON."""
  from transforms.record_types import safe_str
  return safe_str(value) if isinstance(value, str) else json_text(value)


def tf_feature_value(kind, value):
  """(list kind, [value]) of the tf.train.Feature holding `value`: int64_list for bools
  and ints, float_list for floats, bytes_list (the string, else JSON text) otherwise; a
  missing value is MISSING_INT, NaN or empty bytes."""
  from transforms.record_types import MISSING_INT
  name = kind_name(kind)
  if name in (BOOL, INT):
    return "int64_list", [MISSING_INT if value is None else int(value)]
  if name == FLOAT:
    return "float_list", [float("nan") if value is None else float(value)]
  if value is None:
    text = ""
  else:
    text = _text(value) if name == STRING else json_text(value)
  return "bytes_list", [text.encode("utf-8")]


def feature_spec(kind) -> Dict[str, Any]:
  """features.json's entry of a kept field: its TFRecord dtype, its kind and its Parquet
  type."""
  from transforms.record_types import MISSING_INT
  name = kind_name(kind)
  spec = {"kind": name, "parquet": str(parquet_type(kind)), "shape": []}
  if name in (BOOL, INT):
    spec.update(dtype="int64", missing=MISSING_INT)
  elif name == FLOAT:
    spec.update(dtype="float32", missing="NaN")
  else:
    spec.update(dtype="string", missing="")
    if name != STRING:
      spec["encoding"] = "JSON text in TFRecord" + (
          "" if name == NESTED else " and Parquet")
  return spec


def kinds_or_text(kinds: Optional[Mapping[str, Any]], names: Sequence[str]) -> Dict[str, Any]:
  """The kinds given, else (a caller that did not unify) every name as a string: strings
  as they are, other values as JSON text."""
  kinds = kinds or {}
  return {name: kinds.get(name, STRING) for name in names}
