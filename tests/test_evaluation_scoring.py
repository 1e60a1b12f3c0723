"""Batched scoring and the CounterFact / ZsRE evaluators on a hand-computable bigram model."""

import math
import re
from types import SimpleNamespace

import pytest
import torch

from revive_plugin.evaluation import metrics as M
from revive_plugin.evaluation.counterfact import evaluate_counterfact
from revive_plugin.evaluation.scoring import score_continuations, score_pairs
from revive_plugin.evaluation.zsre import evaluate_zsre

WORDS = ["<pad>", "<bos>", "the", "capital", "of", "france", "is", "paris", "rome", "berlin", "germany", "x", "?"]


class WordTok:
    """Whitespace tokenizer over WORDS; prompts get a BOS token."""

    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=True):
        ids = [[WORDS.index(w) for w in re.findall(r"\w+|\?", t.lower())] for t in texts]
        return {"input_ids": [([1] if add_special_tokens else []) + x for x in ids]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(" " + WORDS[i] for i in ids if i > 1)


class Bigram(torch.nn.Module):
    """logits[t] = table[token t]: next-token log-probs depend only on the previous token."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(len(WORDS), len(WORDS), generator=g) * 2)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, logits_to_keep=0):
        logits = self.table[input_ids]
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def nll(model, prev_tokens, target_tokens):
    lp = torch.log_softmax(model.table.detach(), -1)
    return -sum(float(lp[p, t]) for p, t in zip(prev_tokens, target_tokens)) / len(target_tokens)


def ids(*words):
    return [WORDS.index(w) for w in words]


def test_score_continuations_hand_computed():
    model, tok = Bigram(), WordTok()
    prompts = ["the capital of france is", "x", "the capital of france is"]
    targets = ["paris", "rome berlin", "rome"]
    got = score_continuations(model, tok, prompts, targets, batch_size=2, progress=False)
    assert got[0].nll == pytest.approx(nll(model, ids("is"), ids("paris")), abs=1e-5)
    assert got[1].nll == pytest.approx(nll(model, ids("x", "rome"), ids("rome", "berlin")), abs=1e-5)
    top = model.table.argmax(-1)
    assert got[1].predicted_ids == (int(top[ids("x")[0]]), int(top[ids("rome")[0]]))


def test_score_pairs_equals_separate_scoring():
    model, tok = Bigram(1), WordTok()
    prompts = ["the capital of france is", "the capital of germany is", "x"]
    a, b = ["paris", "berlin", "rome berlin paris"], ["rome", "paris rome", "x"]
    packed = score_pairs(model, tok, prompts, a, b, batch_size=2, progress=False)
    sa = score_continuations(model, tok, prompts, a, progress=False)
    sb = score_continuations(model, tok, prompts, b, progress=False)
    for (x, y), u, v in zip(packed, sa, sb):
        assert x.nll == pytest.approx(u.nll, abs=1e-5) and y.nll == pytest.approx(v.nll, abs=1e-5)
        assert x.predicted_ids == u.predicted_ids and y.predicted_ids == v.predicted_ids


def test_score_pairs_packed_matches_real_llama(small_model):
    model, tok = small_model
    prompts = ["The capital of France is", "Tokyo is located in the country of"]
    a, b = ["Paris", "Japan"], ["Rome", "New Zealand"]
    packed = score_pairs(model, tok, prompts, a, b, batch_size=2, progress=False)
    sa = score_continuations(model, tok, prompts, a, progress=False)
    sb = score_continuations(model, tok, prompts, b, progress=False)
    for (x, y), u, v in zip(packed, sa, sb):
        assert x.nll == pytest.approx(u.nll, abs=1e-4) and y.nll == pytest.approx(v.nll, abs=1e-4)


def record(case_id, new="rome", true="paris"):
    return {
        "case_id": case_id,
        "requested_rewrite": {"prompt": "the capital of {} is", "subject": "france",
                              "target_new": {"str": new}, "target_true": {"str": true}},
        "paraphrase_prompts": ["x the capital of france is", "x"],
        "neighborhood_prompts": ["the capital of germany is", "x"],
        "neighborhood_targets": ["berlin", "berlin"],
        "generation_prompts": ["the capital of france is"],
        "reference_text": "Rome is the capital of Italy",
    }


def test_evaluate_counterfact_hand_computed():
    model, tok = Bigram(2), WordTok()
    recs = [record(0), record(1, new="berlin", true="rome")]
    res = evaluate_counterfact(model, tok, recs, batch_size=3, progress=False)

    def better(prev, first, second):
        return nll(model, [prev], ids(first)) < nll(model, [prev], ids(second))

    e0, e1 = better(WORDS.index("is"), "rome", "paris"), better(WORDS.index("is"), "berlin", "rome")
    p0 = M.mean([better(WORDS.index("is"), "rome", "paris"), better(WORDS.index("x"), "rome", "paris")])
    n1 = M.mean([better(WORDS.index("is"), "berlin", "berlin"), better(WORDS.index("x"), "berlin", "berlin")])
    n0 = M.mean([better(WORDS.index("is"), "berlin", "rome"), better(WORDS.index("x"), "berlin", "rome")])
    assert res["per_record"]["efficacy"] == [float(e0), float(e1)]
    assert res["per_record"]["paraphrase"][0] == pytest.approx(p0)
    assert res["per_record"]["neighborhood"] == pytest.approx([n0, n1])
    assert n1 == 0.0  # equal NLLs never count as success
    assert res["efficacy"] == pytest.approx((e0 + e1) / 2)
    sub = evaluate_counterfact(model, tok, recs, max_neighborhood=1, max_paraphrase=1, progress=False)
    assert sub["per_record"]["neighborhood"][0] == float(better(WORDS.index("is"), "berlin", "rome"))


def test_evaluate_zsre_hand_computed():
    model, tok = Bigram(3), WordTok()
    top = model.table.argmax(-1)
    rec = {"subject": "france", "src": "the capital of france is", "rephrase": "x", "alt": "paris rome",
           "answers": ["rome"], "loc": "the capital of germany is", "loc_ans": "berlin"}
    res = evaluate_zsre(model, tok, [rec], progress=False)
    # default target: answers[0] (MEMIT / AlphaEdit); target="alt" scores towards alt
    assert res["efficacy"] == float(int(top[WORDS.index("is")]) == WORDS.index("rome"))
    res_alt = evaluate_zsre(model, tok, [rec], progress=False, target="alt")
    expect = M.mean([int(top[WORDS.index("is")]) == WORDS.index("paris"), int(top[WORDS.index("paris")]) == WORDS.index("rome")])
    assert res_alt["efficacy"] == pytest.approx(expect)
    assert res["neighborhood"] == float(int(top[WORDS.index("?")]) == WORDS.index("berlin"))
    again = evaluate_zsre(model, tok, [rec], baseline=res, progress=False)
    assert again["neighborhood"] == 1.0


def test_generation_metrics_small_llama(small_model):
    model, tok = small_model
    recs = [{
        "case_id": 0,
        "requested_rewrite": {"prompt": "The capital of {} is", "subject": "France",
                              "target_new": {"str": "Rome"}, "target_true": {"str": "Paris"}},
        "paraphrase_prompts": ["France's capital is"],
        "neighborhood_prompts": ["The capital of Germany is"],
        "generation_prompts": ["France is a country", "The capital of France"],
        "reference_text": "Rome is the capital city of Italy.",
    }]
    tfidf = M.TfidfModel.fit(["rome italy", "paris france", "country city"])
    res = evaluate_counterfact(model, tok, recs, generation=True, generation_protocol="fast", tfidf=tfidf,
                               progress=False)
    assert res["n_generation_records"] == 1 and len(res["generation"]["texts"][0]) == 2
    assert res["generation"]["texts"][0][0].startswith("France is a country")
    assert res["fluency"] > 0 and 0.0 <= res["consistency"] <= 1.0
    assert not math.isnan(res["score"])
    # MEMIT's protocol: every generation prompt, seeded top-k sampling, 100 tokens with the prompt
    recs[0]["generation_prompts"].append("People in France")
    seen = []
    generate = model.generate
    model.generate = lambda **kw: seen.append(kw) or generate(**kw)
    try:
        memit = evaluate_counterfact(model, tok, recs, generation=True, generation_seed=1, tfidf=tfidf, progress=False)
        again = evaluate_counterfact(model, tok, recs, generation=True, generation_seed=1, tfidf=tfidf, progress=False)
    finally:
        del model.generate
    texts = memit["generation"]["texts"][0]
    assert memit["generation"]["protocol"] == "memit" and len(texts) == 3
    assert texts == again["generation"]["texts"][0]
    shortest = min(len(tok(p)["input_ids"]) for p in recs[0]["generation_prompts"])
    assert seen[0]["top_k"] == 5 and seen[0]["do_sample"] and seen[0]["max_new_tokens"] == 100 - shortest
