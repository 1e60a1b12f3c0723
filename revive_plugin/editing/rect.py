"""RECT (Gu et al., 2024): MEMIT whose update keeps only its largest relative changes.

Per layer, entries of ΔW are ranked by |ΔW / (W + ε)| (W = the weight before the round) and only the
top ``rect_top_fraction`` are kept; the rest are zeroed. The fraction is 0.4 everywhere, as in
AlphaEdit's RECT baseline (the comparison the REVIVE paper reports); see docs/methods.md.

``rect_mode``:

* ``"reference"`` (default, as AlphaEdit's ``memit_rect_main``): the round is solved as plain MEMIT —
  every layer's full update is written before the next layer is computed — and only then every
  layer's accumulated round update is masked (with REVIVE: masked, then projected).
* ``"per_layer"``: each layer's update is masked right before its write, so later layers are
  computed on (and compensate for) the masked update.
"""

from __future__ import annotations

import torch

from .apply import apply_with
from .editor import Editor
from .hparams import RECTHyperParams


def rect_mask(delta: torch.Tensor, weight: torch.Tensor, fraction: float, eps: float = 1e-8) -> torch.Tensor:
    """Boolean mask of the top ``fraction`` of entries by |ΔW/(W+ε)| (ties broken by index)."""
    rel = (delta.float() / (weight.float() + eps)).abs().flatten()
    k = max(1, int(round(fraction * rel.numel())))
    mask = torch.zeros_like(rel, dtype=torch.bool)
    mask[torch.topk(rel, k, sorted=False).indices] = True
    return mask.view_as(delta)


class RECTEditor(Editor):
    method = "RECT"
    hparams_cls = RECTHyperParams

    def _mask(self, delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return delta * rect_mask(delta, weight, self.hparams.rect_top_fraction, self.hparams.rect_epsilon)

    def finalize(self, layer, delta):
        if self.hparams.rect_mode == "per_layer":
            return self._mask(delta, self.weight(layer).detach())
        self._raw[layer] = self._raw[layer] + delta
        return delta

    def run_round(self, requests, z):
        if self.hparams.rect_mode == "per_layer":
            return super().run_round(requests, z)
        start = {l: self.weight(l).detach().clone() for l in self.layers}
        self._raw = {l: torch.zeros_like(start[l], dtype=torch.float32) for l in self.layers}
        info = super().run_round(requests, z)
        with torch.no_grad():
            for l in self.layers:
                self.weight(l)[...] = start[l]
                final = self.add_delta(l, self._mask(self._raw[l], start[l]))
                layer_info = info[self.param_name(l)]
                if "time_project_s" in final:
                    final["time_project_s"] += layer_info.get("time_project_s", 0.0)
                layer_info.update(final)
        del self._raw
        return info


def apply_rect_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=True, **kwargs):
    """EasyEdit contract; see :func:`~.apply.apply_with`."""
    return apply_with(RECTEditor, model, tok, requests, hparams, copy, return_orig_weights, **kwargs)
