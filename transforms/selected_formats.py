"""The table of --output_format: each format of the selected records is one entry (its name, file
suffix, --help text, encoder, and how a reader opens the folder). Light on purpose: the
parser reads it for --help; the encoders (transforms/output_formats.py) are imported when
a partition is written. Each format has a folder of its own (output_layout.selected_dirs:
the first in selected/, a further one in selected_<name>/) holding only its data files."""
from __future__ import annotations

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class SelectedFormat:
  name: str
  suffix: str
  help: str
  encoder: str    # "module:function": (rows of (Document, rank, ids), kept, tokenized) -> bytes
  read_with: str  # how a user (and tests/test_output_folders.py) reads the folder back

  def encode(self, rows, kept_fields, tokenized) -> bytes:
    module, _, name = self.encoder.partition(":")
    return getattr(importlib.import_module(module), name)(rows, kept_fields, tokenized)


_ENCODERS = "transforms.output_formats"
SELECTED_FORMATS = {f.name: f for f in (
    SelectedFormat("tfrecord", ".tfrecord", "tfrecord (tf.train.Example)",
                   f"{_ENCODERS}:encode_tfrecord",
                   "tf.data.TFRecordDataset(sorted(glob('selected/*.tfrecord')))"),
    SelectedFormat("parquet", ".parquet", "parquet", f"{_ENCODERS}:encode_parquet",
                   "pyarrow.parquet.read_table('selected'), pandas.read_parquet('selected'), "
                   "datasets.load_dataset('parquet', data_dir='selected')"),
    SelectedFormat("jsonl", ".jsonl.gz", "jsonl (gzip-compressed JSON Lines)",
                   f"{_ENCODERS}:encode_jsonl_gz",
                   "pandas.read_json(path, lines=True) for each file, in name order; "
                   "datasets.load_dataset('json', data_dir='selected')"),
)}
OUTPUT_FORMATS = tuple(SELECTED_FORMATS)
