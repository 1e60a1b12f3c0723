"""CounterFact evaluation (paper Appendix E.4, MEMIT's definitions).

Efficacy / Paraphrase / Neighborhood compare the mean token NLL of
``target_new`` and ``target_true`` (Eq. 10-12): all prompts of all records are
scored in one batched pass, both targets packed after each prompt.  With ``generation=True``, Fluency
(Eq. 13) and Consistency are computed from generated text:

* ``generation_protocol="memit"`` (default, MEMIT's ``test_generation``): every generation prompt of
  the record, top-k 5 sampling (seeded) until each text holds 100 tokens including its prompt;
* ``generation_protocol="fast"`` (CI): greedy decoding of 40 new tokens on the first 2 prompts.

Consistency is the TF-IDF cosine (IDF fitted on the offline Wikipedia summaries) between the record's
generated texts and MEMIT's reference: Wikipedia texts about OTHER subjects that share (relation,
new object) (:class:`ConsistencyReferences`), falling back to the record's ``reference_text`` (the new
object's own summary) where no such subject has a text.
"""

from __future__ import annotations

import functools
import math

from ..data import corpus
from ..data.counterfact import validate_counterfact
from .metrics import TfidfModel, mean, n_gram_entropy, tfidf_similarity
from .scoring import greedy_generate, sample_generate, score_pairs

GENERATION_PROTOCOLS = ("memit", "fast")
#: MEMIT's generation settings: sequence length (prompt included) and top-k.
MEMIT_MAX_OUT_LEN = 100
MEMIT_TOP_K = 5
#: The fast protocol: greedy new tokens on the first prompts of a record.
FAST_NEW_TOKENS = 40
FAST_PROMPTS = 2


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


class ConsistencyReferences:
    """MEMIT's consistency reference (its ``AttributeSnippets``): for a record editing (s, r, o → o*),
    the Wikipedia texts of the other subjects s' whose true fact is (s', r, o*).

    Built from a set of CounterFact-form records (the whole fact set, not only the edited ones): their
    (relation_id, target_true) pairs say which subjects hold which object; texts are the offline
    Wikipedia summaries of those subjects (``text_for``, default :func:`corpus.summary_for`).
    """

    def __init__(self, records, text_for=corpus.summary_for):
        self._subjects: dict[tuple[str, str], set[str]] = {}
        for rec in records:
            rw = rec.get("requested_rewrite", {})
            rel = rw.get("relation_id")
            if rel:
                key = (rel, rw["target_true"]["str"].strip())
                self._subjects.setdefault(key, set()).add(rw["subject"])
        self._text_for = text_for

    def texts(self, record: dict) -> list[str]:
        """Texts about other subjects sharing (relation, new object), sorted by subject; [] if none."""
        rw = record["requested_rewrite"]
        rel = rw.get("relation_id")
        subjects = self._subjects.get((rel, rw["target_new"]["str"].strip()), set()) if rel else set()
        out = []
        for subject in sorted(subjects - {rw["subject"]}):
            text = self._text_for(subject)
            if text:
                out.append(text)
        return out

    def reference(self, record: dict) -> tuple[str | None, bool]:
        """(reference text, whether it is MEMIT's): the joined texts, else the fallback of :func:`reference_text`."""
        texts = self.texts(record)
        if texts:
            return " ".join(texts), True
        return reference_text(record), False


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
    generation_protocol: str = "memit",
    generation_seed: int = 0,
    references: ConsistencyReferences | None = None,
    tfidf: TfidfModel | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate CounterFact records on ``model``; returns plain means and per-record lists.

    Per record, each score is the share of its prompts that succeed; the reported
    means average over records (as MEMIT).  ``score`` is the harmonic mean of
    efficacy, paraphrase and neighborhood.  Subsampling: the first
    ``max_paraphrase`` / ``max_neighborhood`` prompts of each record; generation
    on the first ``generation_records`` records (None: all) with ``generation_protocol``
    (module docstring; ``generation_seed`` seeds the sampling). ``references``: the consistency
    references (default: built from ``records`` themselves).
    """
    validate_counterfact(records)
    if generation_protocol not in GENERATION_PROTOCOLS:
        raise ValueError(f"generation_protocol must be one of {list(GENERATION_PROTOCOLS)}, got {generation_protocol!r}")
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
        refs = references if references is not None else ConsistencyReferences(records)
        result.update(_generation_metrics(model, tok, records, batch_size, generation_records,
                                          generation_protocol, generation_seed, refs, tfidf, progress))
    return result


def generate_texts(model, tok, prompts: list[str], protocol: str = "memit", seed: int = 0, batch_size: int = 32,
                   progress: bool = True) -> list[str]:
    """Prompt + continuation per prompt under a generation protocol (module docstring)."""
    if protocol == "memit":
        return sample_generate(model, tok, prompts, max_out_len=MEMIT_MAX_OUT_LEN, top_k=MEMIT_TOP_K, seed=seed,
                               batch_size=batch_size, progress=progress)
    return greedy_generate(model, tok, prompts, FAST_NEW_TOKENS, batch_size, progress)


def _generation_metrics(model, tok, records, batch_size, n_records, protocol, seed, refs, tfidf, progress) -> dict:
    subset = [r for r in records if r.get("generation_prompts")][:n_records]
    n_prompts = None if protocol == "memit" else FAST_PROMPTS
    prompts = [(i, p) for i, r in enumerate(subset) for p in r["generation_prompts"][:n_prompts]]
    texts = generate_texts(model, tok, [p for _, p in prompts], protocol, seed, batch_size, progress)
    by_record: list[list[str]] = [[] for _ in subset]
    for (i, _), text in zip(prompts, texts):
        by_record[i].append(text)
    tfidf = tfidf or default_tfidf()
    fluency, consistency, memit_refs = [], [], 0
    for r, gens in zip(subset, by_record):
        fluency.append(n_gram_entropy(gens))
        ref, is_memit = refs.reference(r)
        memit_refs += is_memit
        consistency.append(tfidf_similarity(" ".join(gens), ref, tfidf) if ref else float("nan"))
    return {
        "fluency": mean(fluency),
        "consistency": mean(c for c in consistency if not math.isnan(c)),
        "n_generation_records": len(subset),
        "n_consistency_memit_reference": memit_refs,
        "generation": {
            "protocol": protocol,
            "case_id": [r["case_id"] for r in subset],
            "fluency": fluency,
            "consistency": consistency,
            "texts": by_record,
        },
    }
