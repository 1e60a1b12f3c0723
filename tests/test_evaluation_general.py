"""General ability: GLUE-style prompts and accuracy, perplexity, knowledge probe, engine."""

import math

import pytest
import torch

from revive_plugin.evaluation import general as G
from revive_plugin.evaluation.engine import compare, evaluate_all

from test_evaluation_scoring import WORDS, Bigram, WordTok


def test_perplexity_hand_computed():
    model, tok = Bigram(4), WordTok()
    texts = ["the capital of france is paris", "x rome"]
    lp = torch.log_softmax(model.table.detach(), -1)
    seqs = [[1] + [WORDS.index(w) for w in t.split()] for t in texts]
    total = -sum(float(lp[a, b]) for s in seqs for a, b in zip(s, s[1:]))
    n = sum(len(s) - 1 for s in seqs)
    assert G.perplexity(model, tok, texts, batch_size=1, progress=False) == pytest.approx(math.exp(total / n), rel=1e-5)
    assert G.perplexity(model, tok, texts, batch_size=2, progress=False) == pytest.approx(math.exp(total / n), rel=1e-5)
    short = G.perplexity(model, tok, texts[:1], max_length=3, progress=False)
    assert short == pytest.approx(math.exp(-(float(lp[1, 2]) + float(lp[2, 3])) / 2), rel=1e-5)


def test_perplexity_batches_stay_within_the_logits_budget():
    """Texts sorted by length are cut so rows × longest length stays within the budget; the perplexity does
    not depend on how the texts are batched, and no autograd graph is built while computing it."""
    model, tok = Bigram(4), WordTok()
    model.config = type("Config", (), {"vocab_size": len(WORDS)})()
    texts = ["the capital of france is paris", "x rome", "paris is the capital"]
    rows, grad = [], []

    def record(module, args, kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        grad.append(torch.is_grad_enabled())

    model.register_forward_pre_hook(record, with_kwargs=True)
    full = G.perplexity(model, tok, texts, batch_size=8, progress=False)
    assert rows == [3]
    budget = 4 * len(WORDS) * 2 * 5  # two rows of 5 tokens
    assert G.perplexity(model, tok, texts, batch_size=8, progress=False, logits_budget=budget) == pytest.approx(full, rel=1e-6)
    assert rows[1:] == [2, 1]
    assert not any(grad)


def test_knowledge_probe_build_score_roundtrip():
    model, tok = Bigram(5), WordTok()
    with torch.no_grad():
        model.table.zero_()
        model.table[WORDS.index("is"), WORDS.index("paris")] = 5.0
    cands = [{"prompt": "the capital of france is", "target": "paris"}, {"prompt": "x", "target": "rome"}]
    probe = G.KnowledgeProbe.build(model, tok, cands, progress=False)
    assert probe.facts == cands[:1]
    assert probe.score(model, tok, progress=False) == 1.0
    clone = G.KnowledgeProbe.from_dict(probe.to_dict())
    with torch.no_grad():
        model.table[WORDS.index("is"), WORDS.index("rome")] = 9.0
    assert clone.score(model, tok, progress=False) == 0.0
    assert math.isnan(G.KnowledgeProbe([]).score(model, tok))
    with pytest.raises(ValueError, match="probe fact 0"):
        G.KnowledgeProbe([{"prompt": 1}])


def test_probe_candidates_skip_ids():
    rec = {"case_id": 3, "requested_rewrite": {"prompt": "The capital of {} is", "subject": "France",
                                               "target_new": {"str": "Rome"}, "target_true": {"str": "Paris"}}}
    assert G.probe_candidates([rec]) == [{"prompt": "The capital of France is", "target": "Paris"}]
    assert G.probe_candidates([rec], exclude_case_ids=[3]) == []


def test_glue_prompts_deterministic_and_balanced(glue_dir):
    rows = G.load_glue_task("sst2", glue_dir)
    p1, g1 = G.glue_prompts("sst2", rows, 5, 2, seed=0)
    p2, g2 = G.glue_prompts("sst2", rows, 5, 2, seed=0)
    assert (p1, g1) == (p2, g2) and len(p1) == 5
    demo = p1[0].split("\n\n")[:2]
    assert sorted(d.rsplit(":", 1)[1] for d in demo) == [" negative", " positive"]
    assert all(p.endswith("Sentiment:") for p in p1)
    for task in G.GLUE_TASKS:
        prompts, gold = G.glue_prompts(task, G.load_glue_task(task, glue_dir), 2, 1, seed=1)
        assert len(prompts) == 2 and all(0 <= g < len(G.TASKS[task].labels) for g in gold)


def test_glue_accuracy_small_model(small_model, glue_dir, monkeypatch):
    model, tok = small_model
    monkeypatch.setenv("REVIVE_GLUE_DIR", str(glue_dir))
    res = G.glue_accuracy(model, tok, tasks=("sst2", "mmlu"), n_per_task=3, shots=1, progress=False)
    assert set(res) == {"sst2", "mmlu", "mean"}
    assert all(0.0 <= v <= 1.0 for v in res.values())
    assert res["mean"] == pytest.approx((res["sst2"] + res["mmlu"]) / 2)


def test_glue_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("REVIVE_GLUE_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="REVIVE_GLUE_DIR"):
        G.glue_dir(None)
    with pytest.raises(FileNotFoundError, match="sst2.jsonl"):
        G.load_glue_task("sst2", tmp_path)
    (tmp_path / "cola.jsonl").write_text('{"sentence": "ok", "label": 1}\n{"sentence": "bad"}\n')
    with pytest.raises(ValueError, match="cola.jsonl:2"):
        G.load_glue_task("cola", tmp_path)
    with pytest.raises(ValueError, match="unknown GLUE task"):
        G.load_glue_task("squad", tmp_path)


def test_lm_eval_optional_message():
    res = G.lm_eval_tasks(None, None)
    if "skipped" in res:
        assert "lm-evaluation-harness" in res["skipped"]


def test_engine_and_compare():
    model, tok = Bigram(6), WordTok()
    pre = evaluate_all(model, tok, ppl_texts=["the capital of france is paris"], progress=False)
    with torch.no_grad():
        model.table.mul_(0.5)
    post = evaluate_all(model, tok, ppl_texts=["the capital of france is paris"], progress=False)
    cmp = compare(pre, post)
    assert set(cmp) == {"perplexity.value"}
    row = cmp["perplexity.value"]
    assert row["delta"] == pytest.approx(row["post"] - row["pre"]) and row["pre"] == pre["perplexity"]["value"]
