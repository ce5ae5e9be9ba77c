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

# Right after the embeddings: the balanced samplers' quotas (clusters stage) may cap topics.
TOPICS = register(Signal(
    "topics", reads=("embeddings",), stage="transforms.topics:topics_stage",
    description="WebOrganizer's topic of the document (a linear head on the embeddings)",
    writes=(Column("topic", INT, "WebOrganizer topic id (0-23) the topic head predicts "
                   "(-1: not computed)", summarised=False),
            Column("topic_name", TEXT, "the name of that topic", feature=False,
                   summarised=False),
            Column("topic_confidence", FLOAT, "the topic head's probability of that topic",
                   None))))

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

# --dedup runs before every signal (transforms/dedup.py, beam_pipelines/graph.py); it is
# registered for its columns (scores/ only), and as --signals it adds nothing.
DEDUP = register(Signal(
    "dedup", stage=f"{_STAGES}:inside_clusters",
    description="--dedup: exact and MinHash copies, removed before any model",
    writes=(Column("copy_of", TEXT, "the id of the kept document this one is a copy of "
                   "(--dedup; never scored, never selected)", feature=False, summarised=False),
            Column("copy_kind", TEXT, "how the copy was found: exact or minhash (--dedup)",
                   feature=False, summarised=False))))

DENSITY = register(Signal(
    "density", reads=("embeddings",), stage=f"{_STAGES}:density",
    description="kernel density of the embedding (LSH sketch) and its 1/density weight",
    writes=(Column("density", FLOAT, "the kernel density of the document's embedding (LSH "
                   "sketch): high = many near neighbours", False),
            Column("sampling_weight", FLOAT, "the inclusion weight 1/density: how strongly "
                   "a document is favoured by the draw", True))))

# --judge_fraction (transforms/cascade.py): the judge's stage marks the documents; this
# entry declares the columns (scores/ only) and runs after the judge.
CASCADE = register(Signal(
    "cascade", reads=("ask_llm",), stage="transforms.cascade:columns_stage",
    description="--judge_fraction: which documents the Ask-LLM judge scored",
    writes=(Column("cascade_judged", INT, "--judge_fraction: 1 judged (in the cheap signal's "
                   "top F), 2 judged (the audit below the cut), 0 not judged", feature=False,
                   summarised=False),
            Column("cascade_score", FLOAT, "--judge_fraction: the cheap signal's score the "
                   "cut ranked by", True, feature=False))))
