"""General-ability measurement for the experiments: ``ability_fn(model, tok) -> dict[str, float]``."""

from __future__ import annotations

from typing import Callable

AbilityFn = Callable[..., dict]

LOWER_IS_BETTER = ("perplexity", "loss", "nll")


def lower_is_better(metric: str) -> bool:
    """True for metrics where a larger value means less ability (perplexity, loss)."""
    return any(token in metric.lower() for token in LOWER_IS_BETTER)


def degradation(metric: str, baseline: float, value: float) -> float:
    """Ability drop (positive = worse than baseline), in the metric's own units."""
    return value - baseline if lower_is_better(metric) else baseline - value


def make_ability_fn(model, tok, n_texts: int = 50, batch_size: int = 8, max_length: int = 128,
                    probe: bool = True, probe_facts: int = 100, texts: list[str] | None = None) -> AbilityFn:
    """Held-out perplexity (and the knowledge probe, built now on the unedited ``model``).

    Texts default to ``wiki_texts("heldout", n=n_texts)``. The probe keeps up to ``probe_facts``
    facts of ``load_facts()`` (true objects) that the unedited model answers exactly.
    Returns ``ability_fn(model, tok) -> {"perplexity": ..., "knowledge": ...}``.
    """
    from revive_plugin.evaluation.general import perplexity

    if texts is None:
        from revive_plugin.data.corpus import wiki_texts

        texts = wiki_texts("heldout", n=n_texts)
    if not texts:
        raise ValueError("no held-out texts to measure perplexity on")
    knowledge = None
    if probe:
        from revive_plugin.data.facts import load_facts
        from revive_plugin.evaluation.general import KnowledgeProbe, probe_candidates

        knowledge = KnowledgeProbe.build(model, tok, probe_candidates(load_facts()), max_facts=probe_facts,
                                         batch_size=batch_size, progress=False)
        if len(knowledge) == 0:
            raise ValueError("the knowledge probe found no fact the unedited model answers; use --no-probe")

    def ability_fn(m, t) -> dict:
        out = {"perplexity": float(perplexity(m, t, texts, batch_size=batch_size, max_length=max_length,
                                              progress=False))}
        if knowledge is not None:
            out["knowledge"] = float(knowledge.score(m, t, batch_size=batch_size, progress=False))
        return out

    ability_fn.probe_size = 0 if knowledge is None else len(knowledge)
    return ability_fn
