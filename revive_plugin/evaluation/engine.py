"""Evaluation engine: one call for all benchmark numbers, and pre/post comparison.

:func:`evaluate_all` runs the requested parts (CounterFact, ZsRE, GLUE,
perplexity, knowledge probe) and returns a plain JSON-able dict;
:func:`compare` puts every number beside its pre-edit baseline.
"""

from __future__ import annotations

import math
import time

from .counterfact import evaluate_counterfact
from .general import KnowledgeProbe, glue_accuracy, perplexity
from .zsre import evaluate_zsre


def evaluate_all(
    model,
    tok,
    counterfact: list[dict] | None = None,
    zsre: list[dict] | None = None,
    glue_dir=None,
    ppl_texts: list[str] | None = None,
    probe: KnowledgeProbe | None = None,
    batch_size: int = 32,
    counterfact_kwargs: dict | None = None,
    glue_kwargs: dict | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate the parts that are given; each part's result carries ``seconds``."""
    out: dict = {}

    def timed(name, fn):
        t = time.perf_counter()
        res = fn()
        res = res if isinstance(res, dict) else {"value": res}
        res["seconds"] = round(time.perf_counter() - t, 3)
        out[name] = res

    if counterfact is not None:
        timed("counterfact", lambda: evaluate_counterfact(model, tok, counterfact, batch_size=batch_size,
                                                          progress=progress, **(counterfact_kwargs or {})))
    if zsre is not None:
        timed("zsre", lambda: evaluate_zsre(model, tok, zsre, batch_size=batch_size, progress=progress))
    if glue_dir is not None:
        timed("glue", lambda: glue_accuracy(model, tok, glue_dir, progress=progress, **(glue_kwargs or {})))
    if ppl_texts is not None:
        timed("perplexity", lambda: perplexity(model, tok, ppl_texts, progress=progress))
    if probe is not None:
        timed("probe", lambda: probe.score(model, tok, batch_size=batch_size, progress=progress))
    return out


def _numbers(d: dict, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for k, v in d.items():
        if k in ("per_record", "generation", "seconds"):
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_numbers(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[key] = float(v)
    return flat


def compare(baseline: dict, current: dict) -> dict[str, dict[str, float]]:
    """``{metric: {"pre", "post", "delta"}}`` for every scalar present in both results."""
    pre, post = _numbers(baseline), _numbers(current)
    out = {}
    for key in sorted(pre.keys() & post.keys()):
        a, b = pre[key], post[key]
        out[key] = {"pre": a, "post": b, "delta": b - a if not (math.isnan(a) or math.isnan(b)) else float("nan")}
    return out
