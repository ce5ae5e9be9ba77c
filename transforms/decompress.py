"""Opening an input file: its bytes as stored (a local file, or any Beam filesystem such as
gs://), decompressed by extension with Python's own decompressors, and a .zst reader that
tells a truncated stream from a complete one."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.input_files import is_remote


def _open_raw(path: str):
  """The file's bytes as they are stored. A local path is opened without blocking and
  must be a regular file: a pipe that took its place since the check is never waited on."""
  if is_remote(path):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
  fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
  try:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
      raise IOError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
  except BaseException:
    os.close(fd)
    raise


def open_decompressed(path: str):
  """Opens a file (_open_raw: local, or through Beam's FileSystems), decompressing by
  extension.

  Python's own decompressors are used (not Beam's CompressedFile) because they support
  readline(limit), which bounds the memory an over-long line can take.
  """
  raw = _open_raw(path)
  name = path.lower()
  if name.endswith(".gz"):
    return gzip.GzipFile(fileobj=raw)
  if name.endswith(".bz2"):
    return bz2.BZ2File(raw)
  if name.endswith((".xz", ".lzma")):
    return lzma.LZMAFile(raw)
  if name.endswith((".zst", ".zstd")):
    return io.BufferedReader(_ZstdReader(raw))
  return raw


class _ZstdReader(io.RawIOBase):
  """Decompresses a .zst stream of one or more frames; raises EOFError when the input ends
  inside a frame.

  zstandard's stream_reader and read_to_iter end silently on a truncated frame; a
  decompressobj has `.eof`, which tells a complete frame from a cut one. Input is fed in
  small pieces because decompress() returns all the output of a piece at once.
  """
  _PIECE = 1 << 14

  def __init__(self, raw):
    import zstandard
    super().__init__()
    self._raw = raw
    self._dctx = zstandard.ZstdDecompressor()
    self._frame = None      # the decompressor of the current frame
    self._input = b""       # compressed bytes not yet fed
    self._output = memoryview(b"")

  def readable(self):
    return True

  def readinto(self, buffer):
    while not self._output:
      if not self._decompress_more():
        return 0
    n = min(len(buffer), len(self._output))
    buffer[:n] = self._output[:n]
    self._output = self._output[n:]
    return n

  def _decompress_more(self) -> bool:
    """Decompresses the next piece; False at the clean end of the stream."""
    if not self._input:
      self._input = self._raw.read(self._PIECE)
      if not self._input:
        if self._frame is not None and not self._frame.eof:
          raise EOFError("zstd stream ends inside a frame (the file is truncated)")
        return False
    if self._frame is None or self._frame.eof:
      self._frame = self._dctx.decompressobj()
    piece, self._input = self._input, b""
    self._output = memoryview(self._frame.decompress(piece))
    if self._frame.eof:
      self._input = self._frame.unused_data  # the start of the next frame, if any
    return True

  def close(self):
    try:
      self._raw.close()
    finally:
      super().close()
