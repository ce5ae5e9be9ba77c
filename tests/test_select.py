"""SelectTopK: exact top-k and ranks from quantile partitions, ties broken by id."""
import random

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings, strategies as st

from transforms.records import Document
from transforms.select import SelectTopK


def _key(doc):
  return (-doc.scores["s"], doc.id, doc.source)


def _run(docs, k, partitions, per_file):
  expected = sorted(docs, key=_key)[:k]
  with TestPipeline(runner="FnApiRunner") as p:
    sel = p | beam.Create(docs) | SelectTopK(_key, keep_count=k, num_partitions=partitions,
                                             docs_per_file=per_file)
    ranked = sel["ranked"] | beam.FlatMap(lambda f: [(r, d.id) for r, d in f[1]])
    files = sel["ranked"] | beam.Map(lambda f: (f[0], [r for r, _ in f[1]]))
    assert_that(ranked, equal_to([(i, d.id) for i, d in enumerate(expected)]), label="ranks")
    assert_that(sel["not_selected"] | beam.Map(lambda d: d.id),
                equal_to([d.id for d in sorted(docs, key=_key)[k:]]), label="rest")
    # Every file's ranks are contiguous and start at its key.
    assert_that(files | beam.Map(lambda f: f[1] == list(range(f[0], f[0] + len(f[1])))),
                lambda xs: all(xs) or (_ for _ in ()).throw(AssertionError(xs)), label="files")


def test_exact_top_k_with_many_ties_and_partitions():
  rng = random.Random(3)
  # Scores from a small set: many ties, settled by id.
  docs = [Document(id=f"{rng.randrange(10**6):07d}-{i}", text="t", source=f"s:{i}",
                   scores={"s": rng.choice([0.1, 0.2, 0.3, 0.5])}) for i in range(3000)]
  _run(docs, k=777, partitions=17, per_file=100)


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 60), frac=st.floats(0.01, 1.0), partitions=st.integers(1, 9),
       seed=st.integers(0, 99))
def test_top_k_property(n, frac, partitions, seed):
  rng = random.Random(seed)
  docs = [Document(id=f"d{rng.randrange(50)}", text="t", source=f"s:{i}",
                   scores={"s": rng.random()}) for i in range(n)]
  _run(docs, k=max(1, int(n * frac)), partitions=partitions, per_file=rng.randint(1, 10))
