"""Pre-edit CounterFact numbers of the bundled model on the generated fact set."""

import pytest

from revive_plugin.data import build_facts
from revive_plugin.evaluation.counterfact import evaluate_counterfact


@pytest.mark.slow
def test_pre_edit_efficacy_low_neighborhood_high(bundled_model):
    model, tok = bundled_model
    records = build_facts(0)[:40]
    res = evaluate_counterfact(model, tok, records, batch_size=64, max_paraphrase=1, max_neighborhood=3, progress=False)
    print({k: round(v, 3) for k, v in res.items() if isinstance(v, float)})
    assert res["efficacy"] <= 0.4
    assert res["paraphrase"] <= 0.4
    assert res["neighborhood"] >= 0.65


@pytest.mark.slow
def test_default_general_measures_are_informative(bundled_model):
    """The CPU presets' general-ability measures (held-out PPL, knowledge probe, representation drift) are far
    from chance on the unedited bundled model and move when the edited matrices are damaged (the criterion of
    benchmarks/bench_general_measures.py; GLUE-style tasks fail it on this model and are off by default)."""
    import torch

    from revive_plugin.data.corpus import wiki_texts
    from revive_plugin.data.facts import load_facts
    from revive_plugin.editing import load_hparams
    from revive_plugin.evaluation import general
    from revive_plugin.evaluation.representation import drift_metrics, prompt_states
    from revive_plugin.evaluation.scoring import score_continuations
    from revive_plugin.nethook import get_parameter

    model, tok = bundled_model
    texts = wiki_texts("heldout", n=8)
    candidates = general.probe_candidates(load_facts()[-2000:])[:256]
    known = score_continuations(model, tok, [c["prompt"] for c in candidates], [c["target"] for c in candidates],
                                64, False)
    probe = general.KnowledgeProbe([c for c, s in zip(candidates, known) if s.exact][:40])
    prompts = [c["prompt"] for c in candidates[:64]]
    ppl0, states0 = general.perplexity(model, tok, texts, progress=False), prompt_states(model, tok, prompts)
    # chance: a uniform guess over the vocabulary has perplexity len(tok); exact greedy answers ~ 0
    assert ppl0 < 60 < len(tok)
    assert sum(s.exact for s in known) / len(known) > 0.2 and len(probe) == 40
    assert probe.score(model, tok, progress=False) == 1.0

    hp = load_hparams("MEMIT", "smollm2-135m")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in hp.layers:
            w = get_parameter(model, f"{hp.rewrite_module_tmp.format(layer)}.weight")
            z = torch.randn(w.shape, generator=gen)
            w.add_(0.3 * w.norm() / z.norm() * z)
    drift = drift_metrics(states0, prompt_states(model, tok, prompts))
    assert general.perplexity(model, tok, texts, progress=False) > 1.02 * ppl0
    assert probe.score(model, tok, progress=False) < 1.0
    assert drift["repr_cos"] < 0.995 and drift["repr_cka"] < 0.995
