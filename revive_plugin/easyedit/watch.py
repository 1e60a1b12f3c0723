"""Per-layer projection inside a host method: project each weight write before anything reads it.

EasyEdit's locate-then-edit methods write layer l (``w[...] += upd`` / ``param[...] = value`` on
``nethook.get_parameter``) and then run forward passes for layer l+1's keys and for the residual at the
last edit layer. Every in-place write bumps the tensor's version counter (``param._version``). A
:class:`WriteWatch` registers a forward pre-hook on each module that owns a protected weight; when the
module is about to compute and its weight's version differs from the last one REVIVE saw, the weight is
replaced by W_ref + P(W − W_ref) (paper Eq. 6; W_ref = the weight at the start of the call). So the
next layer's keys, the residual it solves for, and any keys the method accumulates across calls (AlphaEdit's
``cache_c``) are computed from the projected weights — what the native editor does. The projection is
idempotent, and a write that restores W_ref gives P(0) = 0, so the host's own restores stay exact.

Writes that no forward reads inside the call (the last layer, the final ``w += upd`` of ``apply_*``) and
writes that bypass the version counter (``param.data`` assignments) are projected by the after-call
sweep of :class:`~revive_plugin.easyedit.adapter.ReviveAdapter`. The hooks exist only during the wrapped
call (removed in ``finally``), so the user's own forwards never meet them.
"""

from __future__ import annotations

import torch

from ..reviver import Reviver, get_parameter


class WriteWatch:
    """Forward pre-hooks projecting protected weights at their first read after a host write."""

    def __init__(self, model: torch.nn.Module, reviver: Reviver, refs: dict[str, torch.Tensor]):
        self.model, self.reviver, self.refs = model, reviver, refs
        self.projections: dict[str, int] = {n: 0 for n in refs}  # hook projections per weight
        self.raw_norms: dict[str, float] = {}  # ‖W − W_ref‖ as REVIVE last found it, before projecting
        self._versions = {n: get_parameter(model, n)._version for n in refs}
        self._handles = []
        by_module: dict[str, list[str]] = {}
        for name in refs:
            by_module.setdefault(name.rpartition(".")[0], []).append(name)
        try:
            for module_name, names in by_module.items():
                module = model.get_submodule(module_name)
                self._handles.append(module.register_forward_pre_hook(self._hook(names)))
        except BaseException:
            self.close()
            raise

    def _hook(self, names: list[str]):
        def pre_hook(module, args):
            for name in names:
                if get_parameter(self.model, name)._version != self._versions[name]:
                    self.project(name)
        return pre_hook

    @torch.no_grad()
    def project(self, name: str) -> None:
        """W ← W_ref + P(W − W_ref) for ``name`` (in place, no autograd), and remember its new version."""
        param = get_parameter(self.model, name)
        self.raw_norms[name] = float((param.detach() - self.refs[name].to(param.device, param.dtype)).float().norm())
        self.reviver.apply_(self.model, name, self.refs[name])
        self.projections[name] += 1
        self._versions[name] = param._version

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "WriteWatch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
