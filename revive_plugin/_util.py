"""Small model and tokenizer helpers: the one copy every module uses.

(File writes and the cache folder live in :mod:`revive_plugin._io`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


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


def pad_batch(seqs: Sequence[Sequence[int]], pad: int, device, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of token-id lists padded with ``pad`` on the right (on the left
    with ``left=True``, for reading the last position of every row)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, cols] = torch.tensor(list(s), dtype=torch.long)
        mask[i, cols] = 1
    return ids.to(device), mask.to(device)


def budget_batches(items: Iterable[T], length: Callable[[T], int], max_cells: int,
                   max_rows: int | None = None) -> Iterator[list[T]]:
    """``items`` in order, cut into batches whose rows × longest length stays within ``max_cells`` (the
    size of the padded batch) and of at most ``max_rows`` rows; a single item longer than ``max_cells``
    is a batch of its own. Lazy, so a stream of texts is never held whole."""
    batch: list[T] = []
    longest = 0
    for item in items:
        n = length(item)
        if batch and ((max_rows is not None and len(batch) == max_rows)
                      or max(longest, n) * (len(batch) + 1) > max_cells):
            yield batch
            batch, longest = [], 0
        batch.append(item)
        longest = max(longest, n)
    if batch:
        yield batch
