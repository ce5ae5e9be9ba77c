"""Bytes per selected document in each --output_format, with and without tokens.

Runs the real job (`python -m beam_pipelines.select_data`, --sampler=random,
--keep_fraction=1: every document is written) on the FineWeb-Edu dev file, writing
selected/ as tfrecord, parquet and jsonl at once, first without and then with
--tokenizer (a unigram SentencePiece model with --vocab_size pieces trained on the same
file), and prints the bytes per document of each format and the text's own UTF-8 bytes.

    .venv/bin/python benchmarks/output_formats.py [--data PATH] [--vocab_size 8000]
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.tokenize_speed import train_sentencepiece  # noqa: E402
DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "fineweb_edu_annotated_dev.jsonl")
_SUFFIXES = {"tfrecord": ".tfrecord", "parquet": ".parquet", "jsonl": ".jsonl.gz"}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--data", default=DEFAULT_DATA)
  ap.add_argument("--vocab_size", type=int, default=8000)
  args = ap.parse_args()
  texts = [json.loads(line)["text"] for line in open(args.data) if line.strip()]
  result = {"documents": len(texts),
            "text_utf8_bytes_per_doc": round(sum(len(t.encode()) for t in texts) / len(texts))}
  with tempfile.TemporaryDirectory() as work:
    model = train_sentencepiece(texts, work, args.vocab_size)
    for label, extra in (("text only", []),
                         ("with targets", [f"--tokenizer={model}", "--append_eos"])):
      out = os.path.join(work, label.replace(" ", "_"))
      done = subprocess.run(
          [sys.executable, "-m", "beam_pipelines.select_data", f"--input={args.data}",
           f"--output={out}", "--id_field=id", "--sampler=random", "--keep_fraction=1",
           "--cache=none", "--report=false", "--output_format=tfrecord,parquet,jsonl",
           *extra], cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO),
          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
      if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
      n = json.load(open(os.path.join(out, "metrics.json")))["counts"]["selected"]
      result[label] = {fmt: round(sum(os.path.getsize(p) for p in glob.glob(
          os.path.join(out, "selected", "*" + suffix))) / n)
                       for fmt, suffix in _SUFFIXES.items()}
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
