"""The layout of --output: the names of what a run writes (transforms/write.py writes
them; output_commit.py commits them as one transaction)."""
from transforms import output_commit, output_lock

SELECTED_DIR = "selected"
SCORES_DIR = "scores"
REJECTED_DIR = "rejected"
SKETCH_FILE = "sketch.npz"
HEAD_FILE = "quality_head.npz"
HEAD_FIT_FILE = "quality_head_fit.json"
CLUSTERS_FILE = "clusters.npz"          # the k-means centroids (--clusters_from reads it)
CLUSTER_STATS_FILE = "clusters.json"    # cluster sizes and the balanced cap
REPORT_FILE = "report.html"
REPORT_DATA_FILE = "report.json"
FEATURES_FILE = "features.json"         # selected/features.json: the records' schema
STAGING_ROOT = output_commit.STAGING_ROOT
SUCCESS_FILE = output_commit.SUCCESS_FILE
METRICS_FILE = output_commit.METRICS_FILE
LOCK_FILE = output_lock.LOCK_FILE
# Everything a run writes at the top of --output; a successful rerun replaces these.
OUTPUT_NAMES = (SELECTED_DIR, SCORES_DIR, REJECTED_DIR, METRICS_FILE, SKETCH_FILE,
                HEAD_FILE, HEAD_FIT_FILE, CLUSTERS_FILE, CLUSTER_STATS_FILE, REPORT_FILE,
                REPORT_DATA_FILE)
