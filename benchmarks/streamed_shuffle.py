"""The job on Beam's local runner with each shuffle's output sent to workers in pieces.

Beam's local runner (FnApiRunner, apache_beam/runners/portability/fn_api_runner/
execution.py, GroupingBuffer.partition, and fn_runner.py,
BundleManager._send_input_to_worker) encodes a GroupByKey's whole output for a worker
into one byte string, and sends any stage's whole input as one data message. The
worker holds that message and its bytes while it runs the stage, so with more documents
a worker's memory grows by about twice the largest stage input that carries documents,
whatever the transforms do.
Dataflow's shuffle hands a worker bounded pieces. To measure what the transforms
themselves hold,

    python -m benchmarks.streamed_shuffle SELECT_DATA_ARGS...

runs `beam_pipelines.select_data` in this process with those two methods replaced: the
same encoding cut at element boundaries every CHUNK_BYTES, each piece sent as its own
message (as the runner's data stream does for a worker's outputs, 10 MB each); the
runner holds the same bytes either way. Used by `dedup_bench memory --shuffle=streamed`.
"""
from __future__ import annotations

import os
import sys
import threading

CHUNK_BYTES = 8 << 20


def _streamed_partition(self, n):
  """GroupingBuffer.partition of Beam 2.77 (same encoding and order of keys), but each
  worker's part is a list of byte strings of about CHUNK_BYTES instead of one."""
  from apache_beam.coders.coder_impl import create_OutputStream
  from apache_beam.transforms import trigger
  from apache_beam.transforms.window import GlobalWindow, GlobalWindows
  from apache_beam.utils import windowed_value
  if self._grouped_output:
    return self._grouped_output
  if self._windowing.is_default():
    in_global_window = GlobalWindows.windowed_value(
        None, timestamp=GlobalWindow().max_timestamp(),
        pane_info=windowed_value.PaneInfo(
            is_first=True, is_last=True, timing=windowed_value.PaneInfoTiming.ON_TIME,
            index=0, nonspeculative_index=0)).with_value
    windowed_key_values = lambda key, values: [in_global_window((key, values))]
  else:
    windowed_key_values = trigger.create_trigger_driver(self._windowing,
                                                         True).process_entire_key
  coder_impl = self._post_grouped_coder.get_impl()
  key_coder_impl = self._key_coder.get_impl()
  parts = [[] for _ in range(n)]
  streams = [create_OutputStream() for _ in range(n)]
  for idx, (encoded_key, values) in enumerate(self._table.items()):
    ix = idx % n
    for wkvs in windowed_key_values(key_coder_impl.decode(encoded_key), values):
      coder_impl.encode_to_stream(wkvs, streams[ix], True)
    if streams[ix].size() >= CHUNK_BYTES:
      parts[ix].append(streams[ix].get())
      streams[ix] = create_OutputStream()
  for ix, stream in enumerate(streams):
    if stream.size() or not parts[ix]:
      parts[ix].append(stream.get())
  self._grouped_output = parts
  self._table.clear()
  return parts


def _send_input_to_worker(self, process_bundle_id, read_transform_id, byte_streams):
  """BundleManager._send_input_to_worker of Beam 2.77, flushing after each piece (the
  original writes every piece into one stream and sends it when closed). The runner
  sends a bundle's input before it starts the bundle, and the data channel's queues are
  bounded, so the pieces go from a thread of their own while the bundle runs."""
  data_out = self._worker_handler.data_conn.output_stream(process_bundle_id,
                                                          read_transform_id)

  def send():
    for byte_stream in (byte_streams or []):
      data_out.write(byte_stream)
      data_out.maybe_flush()
    data_out.close()

  threading.Thread(target=send, daemon=True, name="streamed-shuffle-input").start()


def install() -> None:
  import apache_beam
  from apache_beam.runners.portability.fn_api_runner import execution
  if apache_beam.__version__ != "2.77.0":
    sys.exit(f"error: benchmarks.streamed_shuffle mirrors Beam 2.77.0's GroupingBuffer; "
             f"this is Beam {apache_beam.__version__}")
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  execution.GroupingBuffer.partition = _streamed_partition
  fn_runner.BundleManager._send_input_to_worker = _send_input_to_worker


def build_parser():
  """The job's own options, plus --chunk_bytes and --processor_cache_s (taken out
  before the job sees them)."""
  from beam_pipelines.options import build_parser as job_parser
  parser = job_parser()
  parser.add_argument("--chunk_bytes", type=int, default=CHUNK_BYTES,
                      help="pieces of a stage's input of about this many bytes")
  parser.add_argument("--processor_cache_s", type=float, default=None,
                      help="workers keep an idle stage's bundle processor this long "
                           "(Beam: 60 s; benchmarks/worker_cache.py)")
  return parser


def _cached_processors_for(seconds: float) -> None:
  """Local worker processes start as `python -m benchmarks.worker_cache`, which keeps a
  stage's bundle processor `seconds` after its last use instead of Beam's 60."""
  from apache_beam.transforms import environments
  from benchmarks import worker_cache
  os.environ[worker_cache.ENV] = str(seconds)
  original = environments.SubprocessSDKEnvironment.from_command_string.__func__

  def from_command_string(cls, command_string, *args, **kwargs):
    command_string = command_string.replace("apache_beam.runners.worker.sdk_worker_main",
                                            "benchmarks.worker_cache")
    return original(cls, command_string, *args, **kwargs)

  environments.SubprocessSDKEnvironment.from_command_string = classmethod(
      from_command_string)


def _take(argv, name):
  """(the last --name=VALUE's value or None, argv without any --name=...)."""
  found = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  return (found[-1] if found else None), [a for a in argv if not a.startswith(f"--{name}=")]


def main(argv=None) -> None:
  global CHUNK_BYTES
  argv = list(sys.argv[1:] if argv is None else argv)
  chunk, argv = _take(argv, "chunk_bytes")
  if chunk:
    CHUNK_BYTES = int(chunk)
  cache_s, argv = _take(argv, "processor_cache_s")
  if cache_s:
    _cached_processors_for(float(cache_s))
  install()
  from beam_pipelines import select_data
  select_data.main(argv)


if __name__ == "__main__":
  main()
