"""ZsRE evaluation (paper Appendix E.3, MEMIT's definitions).

Each score is teacher-forced top-1 token accuracy (Eq. 7-9): the answer is fed
after the prompt and every answer token is compared with the model's argmax at
the position before it.  Efficacy uses ``src`` -> ``answers[0]``, Paraphrase
``rephrase`` -> ``answers[0]`` (MEMIT's and AlphaEdit's target; ``target="alt"`` scores
towards ``alt`` instead), Neighborhood ``loc + "?"`` -> ``loc_ans``.  Neighborhood
compares with the ``loc_ans`` tokens (MEMIT's code); pass ``baseline`` (a pre-edit
result of this function) to compare with the pre-edit predictions instead (Eq. 9).
"""

from __future__ import annotations

from ..data.counterfact import ZSRE_TARGETS, validate_zsre
from .metrics import mean, token_accuracy
from .scoring import score_continuations


def evaluate_zsre(model, tok, records: list[dict], batch_size: int = 32, baseline: dict | None = None,
                  progress: bool = True, target: str = "answers") -> dict:
    """Efficacy / paraphrase / neighborhood means and per-record lists (plus neighborhood predictions)."""
    validate_zsre(records)
    if target not in ZSRE_TARGETS:
        raise ValueError(f"ZsRE target must be one of {list(ZSRE_TARGETS)}, got {target!r}")
    edit_targets = [r["answers"][0] if target == "answers" else r["alt"] for r in records]
    n = len(records)
    prompts = [r["src"] for r in records] + [r["rephrase"] for r in records] + [r["loc"] + "?" for r in records]
    targets = edit_targets * 2 + [r["loc_ans"] for r in records]
    scores = score_continuations(model, tok, prompts, targets, batch_size, progress, "zsre")
    eff = [s.accuracy for s in scores[:n]]
    para = [s.accuracy for s in scores[n : 2 * n]]
    loc = scores[2 * n :]
    loc_pred = [list(s.predicted_ids) for s in loc]
    if baseline is not None:
        ref = baseline.get("per_record", {}).get("neighborhood_pred")
        if not isinstance(ref, list) or len(ref) != n:
            raise ValueError(f"baseline: per_record.neighborhood_pred must be a list of {n} token lists")
        neigh = [token_accuracy(p, r) for p, r in zip(loc_pred, ref)]
    else:
        neigh = [s.accuracy for s in loc]
    return {
        "n_records": n,
        "efficacy": mean(eff),
        "paraphrase": mean(para),
        "neighborhood": mean(neigh),
        "per_record": {"efficacy": eff, "paraphrase": para, "neighborhood": neigh, "neighborhood_pred": loc_pred},
    }
