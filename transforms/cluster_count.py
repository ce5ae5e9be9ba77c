"""How many k-means clusters a run uses (--num_clusters), without importing Beam: the
option parser's help states the rule, and --help must stay fast."""
from __future__ import annotations

import math
from typing import Optional

# Chosen on half A of the WebOrganizer dev file (benchmarks/cluster_methods.py): sqrt(N)
# for the best cluster sampler there (balanced_far); plain balanced measured the same at
# every count from 23 clusters to k. At most k (more clusters than documents kept leaves
# most clusters without any), and at most MAX_AUTO_CLUSTERS: k-means++ runs on one
# worker in O(clusters x sample x dim), and the centroids are every worker's side input.
MAX_AUTO_CLUSTERS = 10_000
AUTO_RULE = (f"ceil(sqrt(N)) for N documents, at most k (the documents kept) and at most "
             f"{MAX_AUTO_CLUSTERS:,}")


def auto_num_clusters(documents: int, keep: int) -> int:
  """--num_clusters=auto for `documents` documents of which `keep` are selected."""
  return max(1, min(int(math.ceil(math.sqrt(max(documents, 1)))), max(keep, 1),
                    MAX_AUTO_CLUSTERS))


def clusters_for(num_clusters: Optional[int], documents: int, keep: int, sample: int) -> int:
  """The number of clusters a run uses: --num_clusters (None: auto), never more than
  the documents in the initialisation sample (k-means++ picks centroids among them)."""
  wanted = auto_num_clusters(documents, keep) if num_clusters is None else num_clusters
  return max(1, min(wanted, sample))
