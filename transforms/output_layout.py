"""The layout of --output: the names of what a run writes (transforms/write.py writes
them; output_commit.py commits them as one transaction)."""
from typing import Dict, Sequence

from transforms import output_commit, output_lock
from transforms.selected_formats import OUTPUT_FORMATS

SELECTED_DIR = "selected"
SCORES_DIR = "scores"
REJECTED_DIR = "rejected"
SKETCH_FILE = "sketch.npz"
HEAD_FILE = "quality_head.npz"
HEAD_FIT_FILE = "quality_head_fit.json"
CLUSTERS_FILE = "clusters.npz"          # the k-means centroids (--clusters_from reads it)
CLUSTER_STATS_FILE = "clusters.json"    # cluster sizes and the balanced cap
CASCADE_FILE = "cascade.json"           # --judge_fraction: judged, audited, the recall
REPORT_FILE = "report.html"
REPORT_DATA_FILE = "report.json"
GROUPS_FILE = "groups.json"             # per group of the run: documents, selected, scores
DEDUP_STATS_FILE = "dedup.json"         # --dedup: the funnel, largest groups, Jaccard
# The selected records' schema, beside the folders (not in one: a data folder holds only
# data files, so pandas, pyarrow and Hugging Face `datasets` open it as it is).
FEATURES_FILE = "features.json"
STAGING_ROOT = output_commit.STAGING_ROOT
SUCCESS_FILE = output_commit.SUCCESS_FILE
METRICS_FILE = output_commit.METRICS_FILE
LOCK_FILE = output_lock.LOCK_FILE


def selected_dir_of(fmt: str) -> str:
  """The folder of a further --output_format (not the first): selected_<name>."""
  return f"{SELECTED_DIR}_{fmt}"


def selected_dirs(formats: Sequence[str]) -> Dict[str, str]:
  """Each --output_format's folder, one format per folder: the first format in
  selected/ (so a one-format run's paths never change), each further one in
  selected_<name>/ (--output_format=tfrecord,parquet: selected/*.tfrecord and
  selected_parquet/*.parquet)."""
  return {fmt: SELECTED_DIR if i == 0 else selected_dir_of(fmt)
          for i, fmt in enumerate(formats)}


# Everything a run writes at the top of --output; a successful rerun replaces these
# (every format's folder: a rerun with fewer formats leaves no stale one behind).
OUTPUT_NAMES = (SELECTED_DIR, *(selected_dir_of(f) for f in OUTPUT_FORMATS), FEATURES_FILE,
                SCORES_DIR, REJECTED_DIR, METRICS_FILE, SKETCH_FILE,
                HEAD_FILE, HEAD_FIT_FILE, CLUSTERS_FILE, CLUSTER_STATS_FILE, REPORT_FILE,
                REPORT_DATA_FILE, CASCADE_FILE, GROUPS_FILE, DEDUP_STATS_FILE)
