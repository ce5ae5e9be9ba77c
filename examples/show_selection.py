"""Prints what the example run selected, read back from the ranked TFRecords.

    .venv/bin/python examples/show_selection.py out/example
"""
import glob
import json
import os
import sys

# TensorFlow's C++ start-up lines, and its "failed call to cuInit" when tf.data starts
# without a GPU, are noise here (set before select_data sets its own level).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from beam_pipelines.select_data import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()
import tensorflow as tf  # noqa: E402

FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "text": tf.io.FixedLenFeature([], tf.string),
    "rank": tf.io.FixedLenFeature([], tf.int64),
    # Every score is in every record (NaN where the run did not compute it).
    "ask_llm_score": tf.io.FixedLenFeature([], tf.float32),
    "quality_score": tf.io.FixedLenFeature([], tf.float32),
}


def main(out_dir: str, corpus: str = "examples/corpus.jsonl") -> None:
  labels = {}
  for line in open(corpus):
    row = json.loads(line)
    labels[row["id"]] = row.get("label", "?")
  files = sorted(glob.glob(os.path.join(out_dir, "selected", "*.tfrecord")))
  ds = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, FEATURES))
  print(f"{'rank':>4}  {'score':>7}  {'label':<12} text")
  for ex in ds:
    doc_id = ex["id"].numpy().decode()
    text = ex["text"].numpy().decode().replace("\n", " ")
    # Ask-LLM's P(yes), or the quality head's score on a --sampler=quality_head run.
    score = float(ex["ask_llm_score"])
    score = float(ex["quality_score"]) if score != score else score
    print(f"{int(ex['rank']):>4}  {score:7.4f}  {labels.get(doc_id, '?'):<12} {text[:70]}")
  metrics = json.load(open(os.path.join(out_dir, "metrics.json")))
  print(json.dumps(metrics["counts"]))


if __name__ == "__main__":
  main(*sys.argv[1:])
