"""The samplers, as one table: what each selects, what it needs, and its sort key.

The parser's choices and --help, the README check and templates/metadata.json all come
from SAMPLERS. Adding a sampler is one entry here plus its key function (and a README
row, which tests/test_readme.py asks for).

Sort keys are ascending = better (or drawn first) and end with (id, source), so they are
unique per record and the selection is exact and deterministic (transforms/select.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

from transforms.records import (ASK_LLM_SCORE, CLUSTER, CLUSTER_DISTANCE, DUPLICATE_OF,
                                QUALITY_SCORE)
from transforms.sampling import density_sampling_key, quota_key, random_key
from transforms.algorithms.cascade_recall import CASCADE_GROUP, CASCADE_SCORE, NOT_JUDGED

# What a sampler needs computed; the graph adds exactly these stages.
ASK_LLM = "ask_llm"          # Ask-LLM scores on every document
PERPLEXITY = "perplexity"    # perplexity under the scorer
EMBEDDINGS = "embeddings"    # sentence embeddings
HEAD = "quality_head"        # the quality head (fitted or loaded), on the embeddings
DENSITY = "density"          # the LSH sketch and each document's density
CLUSTERS = "clusters"        # k-means on the embeddings: each document's cluster
SEMDEDUP = "semdedup"        # near-duplicates inside each cluster


def _worst_last(value, higher_is_better: bool = True) -> tuple:
  """A total sort key for a score (ascending = better): a document whose model failed
  (no score) or whose score is NaN sorts after every scored one, so it is selected
  only when nothing else is left, and a NaN never breaks the ordering."""
  if value is None or value != value:
    return (1, 0.0)
  return (0, -value if higher_is_better else value)


def ask_llm_key(doc):
  """Best first: highest score, then smallest id, then source (unique per record). With
  --judge_fraction, a document the judge did not score comes after every judged one, by
  the cheap score (transforms/cascade.py), and before those the judge failed on."""
  if doc.scores.get(CASCADE_GROUP) == NOT_JUDGED:
    cheap = doc.scores.get(CASCADE_SCORE)
    tier = (0.5, -cheap) if cheap is not None and cheap == cheap else (0.75, 0.0)
    return (tier, doc.id, doc.source)
  return (_worst_last(doc.scores.get(ASK_LLM_SCORE)), doc.id, doc.source)


def quality_key(doc):
  return (_worst_last(doc.scores.get(QUALITY_SCORE)), doc.id, doc.source)


def perplexity_key(doc):
  """The paper's perplexity filter keeps the lowest per-token perplexity first."""
  return (_worst_last(doc.scores.get("perplexity"), higher_is_better=False), doc.id,
          doc.source)


def prototype_key(doc):
  """SSL prototypes: the documents farthest from their cluster's centroid first."""
  return (_worst_last(doc.scores.get(CLUSTER_DISTANCE)), doc.id, doc.source)


def semdedup_key(seed: int):
  """A uniform draw among the documents SemDeDup kept; its duplicates (then the
  documents it could not cluster) only when fewer than k were kept."""
  draw = random_key(seed)

  def key(doc):
    if doc.scores.get(CLUSTER) is None:
      group = 2
    else:
      group = 0 if doc.scores.get(DUPLICATE_OF) is None else 1
    return (group, draw(doc))
  return key


def _balanced(name: str, help: str, needs: Tuple[str, ...],
              within: Callable[[int], Callable]) -> "Sampler":
  """A cluster-balanced sampler: each cluster's quota filled in the order within(seed),
  and the final key putting the documents in quota first."""
  return Sampler(name, help, needs, lambda seed: quota_key(within(seed)), quota_key=within)


@dataclasses.dataclass(frozen=True)
class Sampler:
  """One way of selecting.

  Attributes:
    name: the --sampler value.
    help: one sentence for --help and the README.
    needs: the stages it needs (ASK_LLM, PERPLEXITY, EMBEDDINGS, HEAD, DENSITY,
      CLUSTERS, SEMDEDUP).
    key: seed -> the final selection's sort key (a function of a Document).
    pool_key: when set, a quality pool of --quality_pool_factor x k documents is taken
      first by this key, and the final key selects inside it.
    ranked_by: the score the final selection ranks by (None for a draw), and whether
      higher is better: the report marks its cutoff.
    pool_ranked_by: the score of the quality pool (with pool_key).
    quota_key: cluster-balanced samplers: seed -> the order inside a cluster that its
      quota is filled in (transforms/cluster_sampling.ClusterQuota).
  """
  name: str
  help: str
  needs: Tuple[str, ...]
  key: Callable[[int], Callable]
  pool_key: Optional[Callable] = None
  ranked_by: Optional[str] = None
  higher_is_better: bool = True
  pool_ranked_by: Optional[str] = None
  quota_key: Optional[Callable[[int], Callable]] = None

  def order_key(self, seed: int) -> Callable:
    """The order the report shows the documents that were not selected in: the quality
    pool's (outside the pool, a draw order means nothing), else the selection's."""
    return self.pool_key if self.pool_key is not None else self.key(seed)

  @property
  def order_name(self) -> Optional[str]:
    """The score of order_key (None: a draw order)."""
    return self.pool_ranked_by or self.ranked_by

  def uses(self, stage: str) -> bool:
    return stage in self.needs


_TABLE = (
    Sampler("ask_llm", "top-k by Ask-LLM score", (ASK_LLM,), lambda seed: ask_llm_key,
            ranked_by=ASK_LLM_SCORE),
    Sampler("density", "draw k without replacement with probability proportional to "
            "1/density (coverage)", (EMBEDDINGS, DENSITY), density_sampling_key),
    Sampler("random", "uniform draw", (), random_key),
    Sampler("ask_llm_density", "keep the top --quality_pool_factor x k by Ask-LLM, then "
            "density-sample k from that pool", (ASK_LLM, EMBEDDINGS, DENSITY),
            density_sampling_key, pool_key=ask_llm_key, pool_ranked_by=ASK_LLM_SCORE),
    Sampler("quality_head", "top-k by the quality head's score (see below)",
            (EMBEDDINGS, HEAD), lambda seed: quality_key, ranked_by=QUALITY_SCORE),
    Sampler("quality_head_density", "like ask_llm_density with the head",
            (EMBEDDINGS, HEAD, DENSITY), density_sampling_key, pool_key=quality_key,
            pool_ranked_by=QUALITY_SCORE),
    Sampler("perplexity", "keep the lowest per-token perplexity under --scorer_model (a "
            "causal LM)", (PERPLEXITY,), lambda seed: perplexity_key,
            ranked_by="perplexity", higher_is_better=False),
    _balanced("balanced", "cluster-balanced: k-means clusters of the embeddings, the cap x "
              "with sum over clusters of min(x, size) = k, and min(x, size) documents drawn "
              "from each cluster (coverage of topics); --balance_by=topic or field:NAME caps "
              "those groups instead (topics: each quota filled most confident first). On "
              "skewed corpora the cap over clusters gains little topic balance: use "
              "--balance_by=topic, or balanced_far", (EMBEDDINGS, CLUSTERS), random_key),
    _balanced("balanced_far", "like balanced, each cluster's quota filled with the "
              "documents farthest from its centroid (prototypes inside the cap)",
              (EMBEDDINGS, CLUSTERS), lambda seed: prototype_key),
    _balanced("ask_llm_balanced", "like balanced, each cluster's quota filled with its "
              "best documents by Ask-LLM", (ASK_LLM, EMBEDDINGS, CLUSTERS),
              lambda seed: ask_llm_key),
    _balanced("quality_head_balanced", "like ask_llm_balanced with the head",
              (EMBEDDINGS, HEAD, CLUSTERS), lambda seed: quality_key),
    Sampler("semdedup", "SemDeDup: inside each cluster, a document more similar than 1 - "
            "--semdedup_eps to a kept one is a duplicate; draw k from the kept ones",
            (EMBEDDINGS, CLUSTERS, SEMDEDUP), semdedup_key),
    Sampler("prototypes", "SSL prototypes: the k documents farthest from their cluster's "
            "centroid", (EMBEDDINGS, CLUSTERS), lambda seed: prototype_key,
            ranked_by="cluster_distance"),
)
SAMPLERS: Dict[str, Sampler] = {s.name: s for s in _TABLE}
DEFAULT = "ask_llm"  # once a model is named (--scorer_model, --embedding_model, the cascade)
# With only the bundled models: their best selection. The bundled head separates a 70B
# judge's educational pages at ROC AUC 0.88 against 0.68 for the bundled 135M judge, and
# runs 11.7x as fast (docs/measurements.md#the-bundled-quality-head).
BUNDLED_DEFAULT = "quality_head"


def default_sampler(names_a_model: bool) -> str:
  """--sampler when none is given (options.parse_args)."""
  return DEFAULT if names_a_model else BUNDLED_DEFAULT


def names_using(stage: str) -> Tuple[str, ...]:
  return tuple(s.name for s in _TABLE if s.uses(stage))


def parser_help() -> str:
  return (" ".join(f"{s.name}: {s.help}." for s in _TABLE)
          + f" Draws are deterministic given --seed. Default: {BUNDLED_DEFAULT} with the "
          "bundled models (the bundled head: ROC AUC 0.88 against a 70B judge's labels, "
          "against 0.68 for the bundled 135M judge, at 11.7x its speed); "
          f"{DEFAULT} once --scorer_model, --embedding_model or --judge_fraction names "
          "a model or a cascade.")
