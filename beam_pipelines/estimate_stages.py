"""The stages --estimate_only prices (beam_pipelines/estimate.py): which the sampler and
the cascade run, each with its documents and tokens from the sample."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from beam_pipelines import estimate as est
from beam_pipelines import samplers as samplers_lib
from beam_pipelines.estimate import Stage

# The cascade's cheap signal when it is the quality head (cascade_options.HEAD_SIGNAL).
_HEAD_SIGNAL = "quality_head"


def _scale(tokens_in_sample: int, sampled: int, documents: int) -> int:
  return int(round(tokens_in_sample / max(sampled, 1) * documents))


def plan(job, texts: List[str], n: int) -> Tuple[List[Stage], Optional[List[Stage]], Dict]:
  """(the run's stages, the same run without the cascade or None, facts for the output)."""
  uses = job.sampler.uses
  cascade = getattr(job, "cascade", None)
  fraction = getattr(cascade, "judge_fraction", None)
  signal = getattr(cascade, "signal", _HEAD_SIGNAL)
  facts: Dict = {}
  scorer = embedder = None
  judge_tokens = perplexity_tokens = embed_tokens = 0
  needs_scorer = job.runs_ask_llm or job.runs_perplexity or (
      fraction is not None and signal == "perplexity")
  if needs_scorer:
    scorer = est._Model(job.scorer, "scorer")  # pylint: disable=protected-access
    facts.update(model=scorer.resolved.name, model_parameters=scorer.params,
                 max_tokens=job.scorer.max_tokens)
    if job.runs_ask_llm:
      from models.ask_llm import PromptEncoder
      from transformers import AutoConfig
      is_enc_dec = bool(getattr(AutoConfig.from_pretrained(
          scorer.resolved.path, **scorer.resolved.from_pretrained_kwargs()),
          "is_encoder_decoder", False))
      encoder = PromptEncoder(scorer.tokenizer, job.scorer, is_enc_dec)
      judge_tokens = sum(len(encoder.encode(t)) for t in texts)
      facts.update(sample_tokens=judge_tokens,
                   mean_prompt_tokens=round(judge_tokens / len(texts), 1))
    perplexity_tokens = est._truncated_tokens(  # pylint: disable=protected-access
        scorer.tokenizer, texts, job.scorer.max_tokens)
  head_cheap = fraction is not None and signal == _HEAD_SIGNAL
  if job.runs_embeddings or head_cheap:
    embedder = est._Model(job.embedding, "embedding")  # pylint: disable=protected-access
    embed_tokens = est._truncated_tokens(  # pylint: disable=protected-access
        embedder.tokenizer, texts, job.embedding.max_tokens)
    facts.update(embedding_model=embedder.resolved.name,
                 embedding_parameters=embedder.params)
  sampled = len(texts)

  def judge(documents, why):
    rate, source = est._rate(scorer.params, job.gpu_tokens_per_second)  # pylint: disable=protected-access
    return Stage("judge (Ask-LLM)", documents, _scale(judge_tokens, sampled, documents),
                 rate, source, why)

  def perplexity(why="every document"):
    rate, source = est._rate(scorer.params, job.gpu_tokens_per_second)  # pylint: disable=protected-access
    return Stage("perplexity", n, _scale(perplexity_tokens, sampled, n), rate, source, why)

  def embeddings(why="every document"):
    rate, source = est._rate(embedder.params, None)  # pylint: disable=protected-access
    return Stage("embeddings", n, _scale(embed_tokens, sampled, n), rate, source,
                 f"{why}; truncated to {job.embedding.max_tokens} tokens")

  def stages(with_cascade: bool) -> List[Stage]:
    out = []
    cheap = with_cascade and fraction is not None
    if job.runs_ask_llm:
      out.append(judge(*est.judge_share(job, n, cascade_on=with_cascade)))
    if job.runs_perplexity or (cheap and signal == "perplexity"):
      out.append(perplexity("every document" if job.runs_perplexity
                            else "the cascade's cheap signal, every document"))
    if uses(samplers_lib.EMBEDDINGS) or (cheap and head_cheap):
      out.append(embeddings("every document" if uses(samplers_lib.EMBEDDINGS)
                            else "for the cascade's quality head"))
    if cheap and signal not in (_HEAD_SIGNAL, "perplexity"):
      out.append(Stage(f"cheap signal ({signal})", n,
                       detail="the cascade's cheap signal, every document"))
    if uses(samplers_lib.HEAD) or (cheap and head_cheap):
      out.append(Stage("quality head", n, detail="a dot product per embedding"))
    if uses(samplers_lib.CLUSTERS):
      k = est.clusters(job, n)
      fit = min(job.kmeans_sample, n)
      out.append(Stage("k-means", n, detail=(
          f"{job.kmeans_iterations} passes over a {fit:,}-document sample, then one "
          f"assignment pass over all; k = {k:,}")))
    if uses(samplers_lib.DENSITY):
      out.append(Stage("density sketch", n, detail=(
          f"{est.DENSITY_PASSES} passes over the embeddings (build the sketch, query it)")))
    return out

  with_cascade = stages(True)
  without = stages(False) if fraction is not None and job.runs_ask_llm else None
  return with_cascade, without, facts
