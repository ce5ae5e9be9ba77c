"""Tokenization throughput of --tokenizer's code path against sentencepiece's own encoder.

Trains a SentencePiece model (unigram, --vocab_size) on the first half of the WebOrganizer
dev documents, then tokenizes the other half, in the same process and session:
1. the job's path: transforms/tokenize.SentencePieceTokenizer (tensorflow-text, batches
   of 256 texts, as the writing DoFn calls it);
2. sentencepiece's Python encoder, one `encode(list)` call per batch of 256.
It counts the documents whose ids differ (tie-breaking between equally scored
segmentations) and checks that they decode to the same text. Prints documents/s and tokens/s of each and the
ratio (best of --repeats runs each, alternating).

    .venv/bin/python -m benchmarks.tokenize_speed --data PATH [--vocab_size 8000]
        [--repeats 3]

(--data: the WebOrganizer topics dev file.)
"""
import argparse
import json
import os
import tempfile
import time

from benchmarks.harness import WEBORGANIZER, add_data_argument


def train_sentencepiece(texts, directory: str, vocab_size: int) -> str:
  """A unigram SentencePiece model trained on `texts` (one per line); returns its path."""
  import sentencepiece as spm
  with open(os.path.join(directory, "train.txt"), "w") as f:
    f.write("\n".join(t.replace("\n", " ") for t in texts))
  spm.SentencePieceTrainer.train(input=os.path.join(directory, "train.txt"),
                                 model_prefix=os.path.join(directory, "m"),
                                 vocab_size=vocab_size, model_type="unigram", minloglevel=2)
  return os.path.join(directory, "m.model")


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  add_data_argument(ap, "--data", WEBORGANIZER)
  ap.add_argument("--vocab_size", type=int, default=8000)
  ap.add_argument("--repeats", type=int, default=3)
  return ap


def main():
  args = build_parser().parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import sentencepiece as spm
  from transforms.tokenize import SentencePieceTokenizer, _BATCH

  texts = [json.loads(line)["text"] for line in open(args.data) if line.strip()]
  train, test = texts[:len(texts) // 2], texts[len(texts) // 2:]
  with tempfile.TemporaryDirectory() as d:
    model = open(train_sentencepiece(train, d, args.vocab_size), "rb").read()
  sp = spm.SentencePieceProcessor(model_proto=model)
  tft = SentencePieceTokenizer(model)

  def run_tf():
    return [ids.tolist() for ids in tft.tokenize(test)]

  def run_sp():
    out = []
    for i in range(0, len(test), _BATCH):
      out.extend(sp.encode(test[i:i + _BATCH]))
    return out

  run_tf()  # warm up (graph tracing)
  times = {"tensorflow_text": [], "sentencepiece": []}
  ids = {}
  for _ in range(args.repeats):
    for name, fn in (("tensorflow_text", run_tf), ("sentencepiece", run_sp)):
      start = time.perf_counter()
      ids[name] = fn()
      times[name].append(time.perf_counter() - start)
  # tensorflow-text bundles its own SentencePiece build: where two segmentations score
  # the same it may break the tie differently ("m|mm|mm" for "mm|mm|m"). Count how often,
  # and check that such documents still decode to the same text.
  pairs = list(zip(ids["tensorflow_text"], ids["sentencepiece"]))
  differ = [(a, b) for a, b in pairs if a != b]
  tokens = sum(len(x) for x in ids["sentencepiece"])
  result = {"documents": len(test), "tokens": tokens, "vocab_size": args.vocab_size,
            "identical_ids_docs": len(pairs) - len(differ),
            "differing_docs_same_length": sum(len(a) == len(b) for a, b in differ),
            "differing_docs_same_decoded_text": sum(sp.decode(a) == sp.decode(b)
                                                    for a, b in differ),
            "token_count_difference": sum(len(a) - len(b) for a, b in differ)}
  for name, ts in times.items():
    best = min(ts)
    result[name] = {"docs_per_s": round(len(test) / best, 1),
                    "tokens_per_s": round(tokens / best)}
  result["tensorflow_text_over_sentencepiece"] = round(
      min(times["sentencepiece"]) / min(times["tensorflow_text"]), 3)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
