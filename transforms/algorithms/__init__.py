"""The job's pure algorithms: numpy (and scipy) on ids, numbers and arrays, no Beam.

Each module here is the math of the transforms/ module of the same name, which wraps it
in Beam (CombineFns, DoFns, PTransforms) and re-exports its names:

- sampling: Efraimidis-Spirakis keys from a hash of (seed, id), inverse-propensity weights.
- sketch_hashing / sketch_counts / density: the LSH density sketch: hashes, buckets,
  counts, merging, density and the sampling weight it gives.
- kmeans: spherical k-means: k-means++ seeding, assignment, exact fixed-point sums,
  the centroid update.
- cluster_sampling: balanced cluster quotas, greedy SemDeDup and its sub-group split.
- quality_head: the ridge head's sufficient statistics, solve and prediction, and how
  well it fits (AUC, Spearman).

A script or benchmark that wants the math imports these without importing Beam.
tests/test_layering.py checks that nothing here imports apache_beam, nor anything outside
this package but the standard library, numpy and scipy (no Documents, no metrics, no I/O).
"""
