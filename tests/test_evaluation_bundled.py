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
