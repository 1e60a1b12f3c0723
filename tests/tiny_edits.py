"""The tiny random Llama and the requests, covariance texts and hparams of the tests that edit it."""

from __future__ import annotations

import torch


def tiny_llama(vocab_size: int, num_hidden_layers: int, intermediate_size: int = 64, hidden_size: int = 32,
               max_position_embeddings: int = 64):
    """A randomly initialised Llama (seed 0, 4 heads), in eval mode and frozen."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=max_position_embeddings)
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)
    return model

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
