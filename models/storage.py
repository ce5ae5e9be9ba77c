"""The model layer's one way to reach files by URI: local paths and gs:// (models, prompt
files, their checksums).

It is Beam's FileSystems, so that every scheme Beam knows works and the tests can serve the
GCS API from a local emulator; imported inside each function, so that importing models/
does not import Beam. This is the only file under models/ that may import apache_beam
(tests/test_layering.py checks it).
"""
from __future__ import annotations

from typing import BinaryIO, List


def match(pattern: str) -> List:
  """The files a path or glob (`**` included) matches: FileMetadata, with .path and
  .size_in_bytes."""
  from apache_beam.io.filesystems import FileSystems
  return FileSystems.match([pattern])[0].metadata_list


def open_file(path: str) -> BinaryIO:
  """A file to read, as FileSystems.open opens it (its default compression: by the
  file's extension)."""
  from apache_beam.io.filesystems import FileSystems
  return FileSystems.open(path)


def checksum(path: str) -> str:
  """The file's checksum as its filesystem reports it (on GCS, from object metadata:
  nothing is downloaded)."""
  from apache_beam.io.filesystems import FileSystems
  return FileSystems.checksum(path)
