"""How target-value optimisation runs the model after the block ``z`` where δ is added.

Every step of the value optimisation needs the final hidden states of the rewriting/KL prompts with
δ added at block ``z``'s output, lookup token (MEMIT's Eq. for v*). Nothing before ``z`` and nothing at
positions before the lookup token depends on δ, so three runners give the same numbers at falling cost:

* :class:`FullForward`: the whole model every step, δ injected by a hook (the reference recipe);
* :class:`TruncatedForward`: blocks up to ``z`` once; each step restarts the stack after ``z``;
* :class:`PrefixCachedForward`: as truncated, and the keys/values of the tokens before the lookup
  token are cached for every block after ``z``; each step runs only the tokens from the lookup on.

All take a subset of rows per call, so requests that have converged drop out of the batch. A runner
returns the last hidden states (rows × width × hidden) and, per row, the offset to subtract from a
position of the padded batch to index them.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from .. import nethook
from ..arch import arch_for

MODES = ("auto", "cached", "truncated", "full")


def _base_attr(model) -> str:
    name = arch_for(model).base_attr
    if not isinstance(getattr(model, name, None), torch.nn.Module):
        raise ValueError(f"cannot find the base model ({name!r}) of {type(model).__name__}")
    return name


def base_model(model):
    """The decoder stack under the LM head (``model.model`` for Llama/Gemma-3, ``transformer`` for GPT-2)."""
    return getattr(model, _base_attr(model))


def z_block_index(model, z_module: str) -> int | None:
    """Index of block ``z_module`` in ``base.layers`` when the stack can restart after it, else None."""
    if not arch_for(model).truncatable:
        return None
    parent, _, idx = z_module.rpartition(".")
    if not idx.isdigit() or getattr(base_model(model), "layers", None) is None:
        return None
    return int(idx) if parent == f"{_base_attr(model)}.layers" else None


@contextlib.contextmanager
def layers_from(base, start: int):
    """Temporarily run only ``base.layers[start:]``."""
    orig = base.layers
    base.layers = torch.nn.ModuleList(list(orig)[start:])
    try:
        yield
    finally:
        base.layers = orig


def _kv_pairs(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) of a Hugging Face cache object (several transformers versions)."""
    if isinstance(cache, (tuple, list)):
        return [(k, v) for k, v in cache]
    if getattr(cache, "layers", None) is not None and hasattr(cache.layers[0], "keys"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    raise TypeError(f"unsupported cache type {type(cache).__name__}")


def _make_cache(pairs):
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(pairs):
        cache.update(k, v, i)
    return cache


class FullForward:
    """The whole model each step; δ added to block ``z``'s output by a hook."""

    def __init__(self, model, z_module, ids, mask, look_pos, look_req):
        self.model, self.base, self.z_module = model, base_model(model), z_module
        self.ids, self.mask, self.look_pos, self.look_req = ids, mask, look_pos, look_req
        self.offset = torch.zeros_like(look_pos)

    def __call__(self, rows: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        pos, add = self.look_pos[rows], delta[self.look_req[rows]]
        at = torch.arange(len(rows), device=rows.device)

        def inject(_, output):
            h = nethook.hidden_of(output)
            return nethook.with_hidden(output, h.index_put((at, pos), add.to(h.dtype), accumulate=True))

        with nethook.Trace(self.model, [self.z_module], edit_output=inject):
            return self.base(input_ids=self.ids[rows], attention_mask=self.mask[rows], use_cache=False)[0]


class TruncatedForward:
    """Blocks after ``z`` only, from the cached block-``z`` output ``h_z`` (rows × length × hidden)."""

    def __init__(self, base, h_z, mask, look_pos, look_req):
        self.base, self.h_z, self.mask, self.look_pos, self.look_req = base, h_z, mask, look_pos, look_req
        self.offset = torch.zeros_like(look_pos)

    def __call__(self, rows: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        at = torch.arange(len(rows), device=rows.device)
        h = self.h_z[rows].index_put((at, self.look_pos[rows]), delta[self.look_req[rows]].to(self.h_z.dtype),
                                     accumulate=True)
        return self.base(inputs_embeds=h, attention_mask=self.mask[rows], use_cache=False)[0]


class PrefixCachedForward:
    """Blocks after ``z``, tokens from the lookup token on; the tokens before it come from a key/value cache.

    Layout per row: the cache holds the padded batch's first ``P`` positions (row ``i``'s own prefix
    ``[0, p_i)`` unmasked), then the row's tokens ``[p_i, len_i)`` follow at cache positions ``P, P+1, …``
    with their true position ids ``p_i, p_i+1, …``.
    """

    def __init__(self, base, h_z, mask, look_pos, look_req, kv):
        self.base, self.look_req = base, look_req
        device = h_z.device
        lengths = mask.sum(1)
        P, width = int(look_pos.max()), int((lengths - look_pos).max())
        j = torch.arange(width, device=device)
        src = (look_pos[:, None] + j).clamp_max(h_z.shape[1] - 1)
        self.suffix_len = lengths - look_pos
        self.suffix_mask = (j < self.suffix_len[:, None]).to(mask.dtype)
        self.suffix_h = torch.gather(h_z, 1, src[..., None].expand(-1, -1, h_z.shape[2]))
        self.suffix_pos = look_pos[:, None] + j
        self.prefix_mask = (torch.arange(P, device=device) < look_pos[:, None]).to(mask.dtype)
        self.kv = [(k[:, :, :P], v[:, :, :P]) for k, v in kv]
        self.look_pos = self.offset = look_pos

    def __call__(self, rows: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        lens = self.suffix_len[rows]
        order = torch.argsort(lens, stable=True)
        width = int(lens.max())
        outs = []
        for part in length_buckets(lens[order].tolist()):
            sel = rows[order[part]]
            h = self._run(sel, delta)
            outs.append(torch.nn.functional.pad(h, (0, 0, 0, width - h.shape[1])))
        return torch.cat(outs)[torch.argsort(order)]

    def _run(self, rows: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        width, P = int(self.suffix_len[rows].max()), int(self.look_pos[rows].max())
        h = self.suffix_h[rows, :width]
        first = h[:, :1] + delta[self.look_req[rows]].to(h.dtype)[:, None]
        h = torch.cat([first, h[:, 1:]], dim=1)
        mask = torch.cat([self.prefix_mask[rows, :P], self.suffix_mask[rows, :width]], dim=1)
        cache = _make_cache([(k[rows, :, :P], v[rows, :, :P]) for k, v in self.kv])
        out = self.base(inputs_embeds=h, attention_mask=mask, position_ids=self.suffix_pos[rows, :width],
                        past_key_values=cache, use_cache=True,
                        cache_position=torch.arange(P, P + width, device=h.device))
        return out[0]


def length_buckets(lengths: list[int], overhead: int = 64) -> list[slice]:
    """Split sorted row lengths into consecutive buckets minimising padded tokens + ``overhead`` per
    bucket (one forward each); O(n²) dynamic programme."""
    n = len(lengths)
    best, cut = [0] + [None] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = best[i] + (j - i) * lengths[j - 1] + overhead
            if best[j] is None or c < best[j]:
                best[j], cut[j] = c, i
    parts, j = [], n
    while j > 0:
        parts.append(slice(cut[j], j))
        j = cut[j]
    return parts[::-1]


class Verified:
    """``fast`` once a check on a few rows agrees with ``reference``; otherwise ``reference`` and a warning."""

    def __init__(self, fast, reference, tol: float = 1e-3, check_rows: int = 6):
        self.fast, self.reference, self.tol, self.check_rows = fast, reference, tol, check_rows
        self.runner = None
        self.offset = fast.offset

    def _check(self, rows: torch.Tensor, delta: torch.Tensor) -> None:
        rows = rows[torch.linspace(0, len(rows) - 1, min(self.check_rows, len(rows))).long()]
        with torch.no_grad():
            out, ref = self.fast(rows, delta), self.reference(rows, delta)
        j = torch.arange(out.shape[1], device=out.device)
        src = (self.fast.offset[rows][:, None] + j).clamp_max(ref.shape[1] - 1)
        ref = torch.gather(ref, 1, src[..., None].expand(-1, -1, ref.shape[2]))
        valid = (j < self.fast.suffix_len[rows][:, None])[..., None]
        err = float(((out - ref) * valid).norm() / (ref * valid).norm().clamp_min(1e-12))
        if not err <= self.tol:
            raise ValueError(f"relative difference {err:.2e} from the truncated forward")

    def __call__(self, rows: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if self.runner is None:
            try:
                self._check(rows, delta)
                self.runner = self.fast
            except (TypeError, AttributeError, ValueError, RuntimeError, IndexError) as e:
                warnings.warn(f"prefix key/value caching is not usable with this model/transformers version "
                              f"({e}); using the truncated forward", RuntimeWarning, stacklevel=2)
                self.runner, self.offset = self.reference, self.reference.offset
        return self.runner(rows, delta)


def _first_pass(model, base, z_module: str, ids, mask, with_cache: bool):
    """Block ``z``'s output (rows × length × hidden) and, with ``with_cache``, every block's keys/values
    (one no-grad pass, rows bucketed by length; None when the model returns no usable cache)."""
    lengths = mask.sum(1)
    order = torch.argsort(lengths, stable=True)
    h_z = None
    kv: list | None = [] if with_cache else None
    for part in length_buckets(lengths[order].tolist()):
        sel = order[part]
        width = int(lengths[sel].max())
        with torch.no_grad(), nethook.Trace(model, [z_module], outputs=True, stop=not with_cache) as tr:
            out = tr.run(base, input_ids=ids[sel, :width], attention_mask=mask[sel, :width], use_cache=with_cache)
        h = tr.outputs[z_module]
        if h_z is None:
            h_z = h.new_zeros(len(ids), ids.shape[1], h.shape[2])
        h_z[sel, :width] = h
        if kv is not None:
            try:
                pairs = _kv_pairs(out.past_key_values)
            except (AttributeError, TypeError, IndexError):
                kv = None
                continue
            if not kv:
                kv = [(k.new_zeros(len(ids), k.shape[1], ids.shape[1], k.shape[3]),
                       v.new_zeros(len(ids), v.shape[1], ids.shape[1], v.shape[3])) for k, v in pairs]
            for (K, V), (k, v) in zip(kv, pairs):
                K[sel, :, :width], V[sel, :, :width] = k, v
    return h_z, kv


def make_runner(model, z_module: str, ids, mask, look_pos, look_req, stack: contextlib.ExitStack,
                mode: str = "auto"):
    """(runner, z at every row's lookup token) for ``mode`` in :data:`MODES` ("auto": the fastest that
    applies). Blocks up to ``z`` run once here, without gradients; ``stack`` restores the model."""
    if mode not in MODES:
        raise ValueError(f"unknown forward mode {mode!r}; expected one of {MODES}")
    base = base_model(model)
    zi = z_block_index(model, z_module) if mode != "full" else None
    if mode in ("cached", "truncated") and zi is None:
        raise ValueError(f"forward mode {mode!r} is not available for {type(model).__name__} at {z_module!r}")
    want_cache = zi is not None and mode in ("auto", "cached") and int(look_pos.max()) > 0
    h_z, kv = _first_pass(model, base, z_module, ids, mask, want_cache)
    z_lookup = h_z[torch.arange(len(ids), device=ids.device), look_pos].float().clone()
    if zi is None:
        return FullForward(model, z_module, ids, mask, look_pos, look_req), z_lookup
    runner = TruncatedForward(base, h_z, mask, look_pos, look_req)
    if kv:
        tol = 1e-3 if h_z.dtype in (torch.float32, torch.float64) else 5e-2  # half precision: round-off
        runner = Verified(PrefixCachedForward(base, h_z, mask, look_pos, look_req, kv), runner, tol=tol)
    stack.enter_context(layers_from(base, zi + 1))
    return runner, z_lookup
