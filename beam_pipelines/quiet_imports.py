"""TensorFlow imported with its C++ start-up lines silenced (the tokenizer check and the
TFRecord writer need it; its messages are printed before its logging is set up)."""
import os
import sys


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow (the TFRecord writer needs it) with the process's stderr closed:
  its C++ start-up lines (cudart_stub "Could not find cuda drivers", cpu_feature_guard,
  "All log messages before absl::InitializeLog()") are written before its logging is set
  up, whatever TF_CPP_MIN_LOG_LEVEL says. Done once, before the pipeline's threads start;
  an import error is raised as usual."""
  if "tensorflow" in sys.modules:
    return
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
      try:
        import tensorflow  # noqa: F401
      finally:
        os.dup2(saved, 2)
  finally:
    os.close(saved)
