"""How many k-means clusters a run uses (--num_clusters), without importing Beam: the
option parser's help states the rule, and --help must stay fast."""
from __future__ import annotations

import math
from typing import Optional

# PLACEHOLDER until benchmarks/cluster_methods.py has chosen the rule.
AUTO_RULE = "sqrt(N) for N documents"


def auto_num_clusters(documents: int, keep: int) -> int:
  """--num_clusters=auto for `documents` documents of which `keep` are selected."""
  return max(1, int(round(math.sqrt(max(documents, 1)))))


def clusters_for(num_clusters: Optional[int], documents: int, keep: int, sample: int) -> int:
  """The number of clusters a run uses: --num_clusters (None: auto), never more than
  the documents in the initialisation sample (k-means++ picks centroids among them)."""
  wanted = auto_num_clusters(documents, keep) if num_clusters is None else num_clusters
  return max(1, min(wanted, sample))
