"""The signals this job ships: their columns, stages and cache codecs (see signals.py).
Registered on import of transforms.signals, in the order the graph runs independent
ones."""
from __future__ import annotations

from transforms.record_types import (ASK_LLM_SCORE, CLUSTER, CLUSTER_DISTANCE, DUPLICATE_OF,
                                     QUALITY_SCORE)
from transforms.signals import FLOAT, INT, TEXT, Column, Signal, register

_STAGES = "transforms.signal_stages"
_CODECS = "transforms.cache_codecs"  # codecs are built when first used (light imports)

ASK_LLM = register(Signal(
    "ask_llm", stage=f"{_STAGES}:ask_llm", codec=f"{_CODECS}:AskLLMCodec",
    counter="scored", model="--scorer_model", error_column=True,
    description="Ask-LLM: an instruction-tuned LLM asked whether the document is informative",
    writes=(Column(ASK_LLM_SCORE, FLOAT, "the Ask-LLM score the sampler ranks by", True),
            Column("p_yes", FLOAT, "P(yes) at the scorer's first answer position", True),
            Column("p_no", FLOAT, "P(no) at the scorer's first answer position", False))))

PERPLEXITY = register(Signal(
    "perplexity", stage=f"{_STAGES}:perplexity", codec=f"{_CODECS}:PerplexityCodec",
    counter="perplexity", model="--scorer_model", error_column=True,
    description="per-token perplexity under the scorer (a causal LM)",
    writes=(Column("perplexity", FLOAT,
                   "per-token perplexity under the scorer (lower is more fluent)", False),
            Column("mean_nll", FLOAT, "mean negative log-likelihood per token", False))))

EMBEDDINGS = register(Signal(
    "embeddings", stage=f"{_STAGES}:embeddings", codec=f"{_CODECS}:EmbeddingCodec",
    counter="embedded", model="--embedding_model", error_column=True,
    description="sentence embeddings (kept on the document while later stages need them)"))

QUALITY_HEAD = register(Signal(
    "quality_head", reads=("embeddings",), stage=f"{_STAGES}:quality_head",
    description="a ridge head on the embeddings (fitted to a teacher, or saved)",
    writes=(Column(QUALITY_SCORE, FLOAT,
                   "the quality head's score (ridge on the embeddings)", True),)))

CLUSTERS = register(Signal(
    "clusters", reads=("embeddings",), stage=f"{_STAGES}:clusters",
    description="spherical k-means on the embeddings",
    writes=(Column(CLUSTER, INT, "the document's k-means cluster (-1: not computed)",
                   summarised=False),
            Column(CLUSTER_DISTANCE, FLOAT,
                   "cosine distance from the document to its cluster's centroid", True))))

# SemDeDup runs inside the clusters stage: it needs the cluster sizes, and the balanced
# samplers' quotas come after it.
SEMDEDUP = register(Signal(
    "semdedup", reads=("clusters",), stage=f"{_STAGES}:inside_clusters",
    description="SemDeDup: near-duplicates inside each cluster",
    writes=(Column(DUPLICATE_OF, TEXT, "the id of the kept document this one duplicates",
                   feature=False, summarised=False),)))

DENSITY = register(Signal(
    "density", reads=("embeddings",), stage=f"{_STAGES}:density",
    description="kernel density of the embedding (LSH sketch) and its 1/density weight",
    writes=(Column("density", FLOAT, "the kernel density of the document's embedding (LSH "
                   "sketch): high = many near neighbours", False),
            Column("sampling_weight", FLOAT, "the inclusion weight 1/density: how strongly "
                   "a document is favoured by the draw", True))))
