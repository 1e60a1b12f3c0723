"""Small model and tokenizer helpers: the one copy every module uses.

(File writes and the cache folder live in :mod:`revive_plugin._io`.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def get_parameter(model: torch.nn.Module, name: str) -> torch.nn.Parameter:
    """The parameter called ``name`` (``model.layers.4.mlp.down_proj.weight``); KeyError (a LookupError)
    naming it when absent."""
    try:
        return model.get_parameter(name)
    except AttributeError:
        raise KeyError(f"model has no parameter named {name!r}") from None


def model_device(model) -> torch.device:
    """Device of the model's first parameter."""
    return next(model.parameters()).device


def pad_id(tok) -> int:
    """A token id to pad with (masked out, so any valid id works): pad, else eos, else bos, else 0."""
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tok, attr, None)
        if value is not None:
            return int(value)
    return 0


def key_matches(name: str, keys: Iterable[str]) -> list[str]:
    """``[name]`` when ``name`` is one of ``keys``, else the keys that equal it up to a dotted prefix
    on either side (``base_model.model.x`` ~ ``model.x``); callers decide what several hits mean."""
    keys = list(keys)
    if name in keys:
        return [name]
    return [k for k in keys if name.endswith("." + k) or k.endswith("." + name)]
