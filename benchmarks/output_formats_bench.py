"""Bytes per selected document in each --output_format, with and without tokens.

Runs the real job (`python -m beam_pipelines.select_data`, --sampler=random,
--keep_fraction=1: every document is written) on the FineWeb-Edu dev file, writing
selected/ as tfrecord, parquet and jsonl at once, first without and then with
--tokenizer (a unigram SentencePiece model with --vocab_size pieces trained on the same
file), and prints the bytes per document of each format and the text's own UTF-8 bytes.

    .venv/bin/python -m benchmarks.output_formats_bench --data PATH [--vocab_size 8000]
"""
import argparse
import glob
import json
import os
import tempfile

from benchmarks.harness import add_data_argument, run_select_data
from benchmarks.tokenize_speed import train_sentencepiece

_SUFFIXES = {"tfrecord": ".tfrecord", "parquet": ".parquet", "jsonl": ".jsonl.gz"}


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  add_data_argument(ap, "--data")
  ap.add_argument("--vocab_size", type=int, default=8000)
  return ap


def main():
  args = build_parser().parse_args()
  texts = [json.loads(line)["text"] for line in open(args.data) if line.strip()]
  result = {"documents": len(texts),
            "text_utf8_bytes_per_doc": round(sum(len(t.encode()) for t in texts) / len(texts))}
  with tempfile.TemporaryDirectory() as work:
    model = train_sentencepiece(texts, work, args.vocab_size)
    for label, extra in (("text only", []),
                         ("with targets", [f"--tokenizer={model}", "--append_eos"])):
      out = os.path.join(work, label.replace(" ", "_"))
      run_select_data(
          [f"--input={args.data}", f"--output={out}", "--id_field=id", "--sampler=random",
           "--keep_fraction=1", "--cache=none", "--report=false",
           "--output_format=tfrecord,parquet,jsonl", *extra], f"{label} run")
      n = json.load(open(os.path.join(out, "metrics.json")))["counts"]["selected"]
      result[label] = {fmt: round(sum(os.path.getsize(p) for p in glob.glob(
          os.path.join(out, "selected", "*" + suffix))) / n)
                       for fmt, suffix in _SUFFIXES.items()}
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
