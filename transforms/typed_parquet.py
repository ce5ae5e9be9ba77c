"""The kept fields' kinds over a run (kept_types, unified by a combine: every record counts,
no arrival order does), and a Parquet file sink whose schema comes from the rows it
writes, for a scores/ whose kept columns are typed only once the run has seen them.
"""
from __future__ import annotations

import functools
from typing import Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, parquetio

from transforms import kept_types


class _KindsFn(beam.CombineFn):
  """Documents' kept values -> {name: kind} (kept_types.final_kinds)."""

  def __init__(self, names: Sequence[str]):
    super().__init__()
    self._names = tuple(names)

  def create_accumulator(self):
    return {}

  def add_input(self, states, doc):
    return kept_types.merge_all(states, kept_types.states_of(doc.extra, self._names))

  def merge_accumulators(self, accumulators):
    return functools.reduce(kept_types.merge_all, accumulators, {})

  def extract_output(self, states):
    return kept_types.final_kinds(states, self._names)


def _ranked_docs(partition):
  return [doc for _, doc in partition[1]]


class KeptKinds(beam.PTransform):
  """{"ranked": partitions (start, [(rank, Document)]), "not_selected": Documents} ->
  a single {name: kind} of the kept fields `names`, over every document."""

  def __init__(self, names: Sequence[str]):
    super().__init__()
    self._names = tuple(names)

  def expand(self, pcolls):
    ranked = pcolls["ranked"] | "RankedDocs" >> beam.FlatMap(_ranked_docs)
    return ((ranked, pcolls["not_selected"]) | "AllDocs" >> beam.Flatten()
            | "UnifyKinds" >> beam.CombineGlobally(_KindsFn(self._names)))


class _Pending:
  def __init__(self, handle):
    self.handle, self.writer = handle, None


class _RowSchemaSink(parquetio._ParquetSink):  # pylint: disable=protected-access
  """Beam's Parquet sink (temporary files, then one rename each: a retried bundle leaves no
  duplicate rows), opening its writer with the first table's schema; a file with no rows
  gets the schema given."""

  def open(self, temp_path):
    return _Pending(filebasedsink.FileBasedSink.open(self, temp_path))

  def write_record(self, pending, table):
    if pending.writer is None:
      pending.writer = pq.ParquetWriter(pending.handle, table.schema,
                                        compression=self._codec)
    pending.writer.write_table(table)

  def close(self, pending):
    if pending.writer is None:
      pending.writer = pq.ParquetWriter(pending.handle, self._schema,
                                        compression=self._codec)
    pending.writer.close()
    pending.handle.close()


def _table(rows, schema_of, kinds):
  return pa.Table.from_pylist(list(rows), schema=schema_of(kinds))


class WriteRowsParquet(beam.PTransform):
  """Row dicts -> Parquet files `prefix`-SSSSS-of-NNNNN`suffix`, the schema
  schema_of(the side input `kinds`) (`empty_schema` for a file without rows)."""

  def __init__(self, prefix: str, schema_of, kinds, empty_schema: pa.Schema,
               codec: str = "snappy", suffix: str = ".parquet"):
    super().__init__()
    self._prefix, self._schema_of, self._kinds = prefix, schema_of, kinds
    self._empty, self._codec, self._suffix = empty_schema, codec, suffix

  def expand(self, rows):
    sink = _RowSchemaSink(
        file_path_prefix=self._prefix, schema=self._empty, codec=self._codec,
        use_deprecated_int96_timestamps=False, use_compliant_nested_type=False,
        file_name_suffix=self._suffix, num_shards=0, shard_name_template=None,
        mime_type="application/x-parquet", triggering_frequency=None)
    return (rows
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=1000)
            | "ToTables" >> beam.Map(_table, self._schema_of, self._kinds)
            | "Write" >> beam.io.Write(sink))
