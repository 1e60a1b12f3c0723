"""Requests, covariance texts and hparams shared by the tests that edit the tiny random Llama."""

from __future__ import annotations

TEXTS = [f"Sentence number {i} talks about {w} and the weather in {c}." for i, (w, c) in enumerate(
    zip(["cats", "dogs", "trains", "music", "rivers", "stars"] * 5, ["Paris", "Oslo", "Lima", "Rome", "Cairo"] * 6))]
R1 = [
    {"prompt": "{} is located in", "subject": "Paris", "target_new": "Rome"},
    {"prompt": "The capital of {} is", "subject": "Spain", "target_new": "Oslo"},
]
R2 = [{"prompt": "{} plays the sport of", "subject": "Lionel Messi", "target_new": "baseball"}]
LAYERS = [1, 2]
NAMES = [f"model.layers.{l}.mlp.down_proj.weight" for l in LAYERS]


def tiny_hparams(cls, tmp_path, **kw):
    """``cls`` filled for the tiny model (covariance from TEXTS under ``tmp_path``), ``kw`` overriding."""
    base = dict(layers=LAYERS, stats_dir=str(tmp_path / "stats"), mom2_n_samples=len(TEXTS), stats_max_tokens=32,
                v_num_grad_steps=4, mom2_update_weight=1.0, v_loss_layer=3)
    base.update(kw)
    return cls(**base)
