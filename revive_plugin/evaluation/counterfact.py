"""CounterFact evaluation (paper Appendix E.4, MEMIT's definitions).

Efficacy / Paraphrase / Neighborhood compare the mean token NLL of
``target_new`` and ``target_true`` (Eq. 10-12): all prompts of all records are
scored in one batched pass, both targets packed after each prompt.  With ``generation=True``, Fluency
(Eq. 13) and Consistency (TF-IDF cosine against the reference text about the
new object) are computed from greedy generations on a subset of records.
"""

from __future__ import annotations

import functools
import math

from ..data import corpus
from ..data.counterfact import validate_counterfact
from .metrics import TfidfModel, mean, n_gram_entropy, tfidf_similarity
from .scoring import greedy_generate, score_pairs


@functools.lru_cache(maxsize=1)
def default_tfidf() -> TfidfModel:
    """TF-IDF model with IDF fitted on all offline Wikipedia summaries."""
    return TfidfModel.fit(corpus.summaries().values())


def reference_text(record: dict) -> str | None:
    """Reference text about the new object: the record's ``reference_text`` or its Wikipedia summary."""
    text = record.get("reference_text")
    if text:
        return text
    return corpus.summary_for(record["requested_rewrite"]["target_new"]["str"])


def _hmean(values: list[float]) -> float:
    if any(math.isnan(v) for v in values) or any(v <= 0 for v in values):
        return 0.0 if not any(math.isnan(v) for v in values) else float("nan")
    return len(values) / sum(1.0 / v for v in values)


def _pairs(record: dict, max_paraphrase: int | None, max_neighborhood: int | None):
    """(kind, prompt, target_first, target_second) tuples; success when first is more likely."""
    rw = record["requested_rewrite"]
    new, true = rw["target_new"]["str"], rw["target_true"]["str"]
    out = [("efficacy", rw["prompt"].format(rw["subject"]), new, true)]
    para = record.get("paraphrase_prompts", [])[:max_paraphrase]
    out += [("paraphrase", p, new, true) for p in para]
    neigh = record.get("neighborhood_prompts", [])
    truths = record.get("neighborhood_targets") or [true] * len(neigh)
    out += [("neighborhood", p, t, new) for p, t in list(zip(neigh, truths))[:max_neighborhood]]
    return out


def evaluate_counterfact(
    model,
    tok,
    records: list[dict],
    batch_size: int = 32,
    generation: bool = False,
    max_paraphrase: int | None = None,
    max_neighborhood: int | None = None,
    generation_records: int | None = 50,
    max_generation_prompts: int | None = 2,
    max_new_tokens: int = 40,
    tfidf: TfidfModel | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate CounterFact records on ``model``; returns plain means and per-record lists.

    Per record, each score is the share of its prompts that succeed; the reported
    means average over records (as MEMIT).  ``score`` is the harmonic mean of
    efficacy, paraphrase and neighborhood.  Subsampling: the first
    ``max_paraphrase`` / ``max_neighborhood`` prompts of each record; generation
    on the first ``generation_records`` records (None: all), first
    ``max_generation_prompts`` prompts each, ``max_new_tokens`` greedy tokens.
    """
    validate_counterfact(records)
    kinds = ("efficacy", "paraphrase", "neighborhood")
    plan = [_pairs(r, max_paraphrase, max_neighborhood) for r in records]
    flat = [x for pairs in plan for x in pairs]
    scores = score_pairs(model, tok, [x[1] for x in flat], [x[2] for x in flat], [x[3] for x in flat],
                         batch_size, progress, "counterfact")
    per = {k: [] for k in kinds}
    margins = {k: [] for k in kinds}
    pos = 0
    for pairs in plan:
        hits = {k: [] for k in kinds}
        gaps = {k: [] for k in kinds}
        for kind, _, _, _ in pairs:
            first, second = scores[pos][0].nll, scores[pos][1].nll
            pos += 1
            hits[kind].append(first < second)
            gaps[kind].append(math.exp(-first) - math.exp(-second))
        for k in kinds:
            per[k].append(mean(hits[k]))
            margins[k].append(mean(gaps[k]))
    result = {
        "n_records": len(records),
        **{k: mean(v for v in per[k] if not math.isnan(v)) for k in kinds},
        **{f"{k}_magnitude": mean(v for v in margins[k] if not math.isnan(v)) for k in kinds},
    }
    result["score"] = _hmean([result[k] for k in kinds])
    result["per_record"] = {"case_id": [r["case_id"] for r in records], **per}
    if generation:
        result.update(_generation_metrics(model, tok, records, batch_size, generation_records,
                                          max_generation_prompts, max_new_tokens, tfidf, progress))
    return result


def _generation_metrics(model, tok, records, batch_size, n_records, n_prompts, max_new_tokens, tfidf, progress) -> dict:
    subset = [r for r in records if r.get("generation_prompts")][:n_records]
    prompts = [(i, p) for i, r in enumerate(subset) for p in r["generation_prompts"][:n_prompts]]
    texts = greedy_generate(model, tok, [p for _, p in prompts], max_new_tokens, batch_size, progress)
    by_record: list[list[str]] = [[] for _ in subset]
    for (i, _), text in zip(prompts, texts):
        by_record[i].append(text)
    tfidf = tfidf or default_tfidf()
    fluency, consistency = [], []
    for r, gens in zip(subset, by_record):
        fluency.append(n_gram_entropy(gens))
        ref = reference_text(r)
        consistency.append(tfidf_similarity(" ".join(gens), ref, tfidf) if ref else float("nan"))
    return {
        "fluency": mean(fluency),
        "consistency": mean(c for c in consistency if not math.isnan(c)),
        "n_generation_records": len(subset),
        "generation": {
            "case_id": [r["case_id"] for r in subset],
            "fluency": fluency,
            "consistency": consistency,
            "texts": by_record,
        },
    }
