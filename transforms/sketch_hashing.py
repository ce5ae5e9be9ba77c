"""The density sketch's hashing and parameters: moved to transforms/algorithms/
sketch_hashing.py (pure numpy, no Beam); its names are importable from here as before."""
from transforms.algorithms.sketch_hashing import (  # noqa: F401  (re-exported)
    AUTO_WIDTH_FACTOR, DEFAULT_CHUNK, Hashes, SketchOptions, SketchParams, auto_bucket_width,
    bucket_ids, check_embeddings, default_groups, embedding_chunks, make_hashes, row_blocks)
