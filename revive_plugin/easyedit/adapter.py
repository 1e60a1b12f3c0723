"""The REVIVE wrapper around EasyEdit ``apply_*_to_model`` functions, and its per-model state.

A wrapped call with ``hparams.use_revive`` off is the original call (one attribute check). With it on:

1. the edited parameters are ``rewrite_module_tmp(s) × layers`` (``.weight``);
2. the model's :class:`~revive_plugin.Reviver` for ``revive_tau`` protects them with the bases of their
   ORIGINAL values: the first call for a model takes them from its current weights (or from the disk
   cache), later calls reuse them although W has moved (paper §3, Appendix C), and originals given
   with :meth:`ReviveAdapter.set_original_weights` take precedence;
3. those parameters are snapshotted, the method runs unchanged, and each change is replaced by its
   projection off the original dominant subspace, W ← W_before + P(W − W_before) (Eq. 6);
4. the method's own return value, ``(model, weights_copy)``, is handed back, so EasyEdit's
   non-sequential restore still writes the pre-call weights back.

Per-model state lives in a :class:`weakref.WeakKeyDictionary` inside the adapter: it dies with the model.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cache import BasisCache
from ..reviver import Reviver, get_parameter
from .hparams_patch import DEFAULT_TAU, ReviveConfigError, check_revive_tau
from .originals import OriginalWeights, is_reviver_dir

log = logging.getLogger("revive_plugin.easyedit")


class ReviveOriginalsWarning(UserWarning):
    """REVIVE took a basis from weights that may already have been edited in this process."""


def edited_param_names(model, hparams) -> list[str]:
    """``<rewrite_module_tmp(s)>.format(layer).weight`` for every layer of ``hparams`` (PMET: all templates).

    A missing template (this project's hparams leave it empty) comes from :func:`revive_plugin.arch.arch_for`.
    """
    templates = getattr(hparams, "rewrite_module_tmps", None) or [getattr(hparams, "rewrite_module_tmp", None)]
    if isinstance(templates, str):
        templates = [templates]
    if any(t is None for t in templates):
        from ..arch import arch_for

        templates = [t if t is not None else arch_for(model).rewrite_module_tmp for t in templates]
    layers = getattr(hparams, "layers", None)
    if not layers:
        raise ReviveConfigError(f"{type(hparams).__name__} has no 'layers': REVIVE cannot tell which weights are edited")
    names: list[str] = []
    for tmp in templates:
        for layer in layers:
            name = f"{tmp.format(layer)}.weight"
            if name not in names:
                names.append(name)
    return names


@dataclass
class _ModelRecord:
    revivers: dict[float, Reviver] = field(default_factory=dict)
    originals: OriginalWeights | None = None
    revived_names: set[str] = field(default_factory=set)
    warned: bool = False
    last_report: dict | None = None


class ReviveAdapter:
    """Wraps apply functions and keeps, per model (weakly), the Revivers of its original weights."""

    def __init__(self, cache: BasisCache | str | os.PathLike | bool | None = None):
        self._cache = None
        self.set_cache(cache)
        self._records: "weakref.WeakKeyDictionary[torch.nn.Module, _ModelRecord]" = weakref.WeakKeyDictionary()
        self._plain_edited: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()

    # ------------------------------------------------------------------ configuration
    def set_cache(self, cache: BasisCache | str | os.PathLike | bool | None) -> None:
        """Basis cache for new Revivers: a BasisCache, a folder, False (memory only) or None (default folder)."""
        if cache is None or isinstance(cache, BasisCache):
            self._cache = cache
        elif cache is False:
            self._cache = BasisCache(False)
        elif isinstance(cache, (str, os.PathLike)):
            self._cache = BasisCache(Path(cache))
        else:
            raise TypeError(f"cache must be a BasisCache, a folder, False or None, got {type(cache).__name__}")

    @property
    def cache(self) -> BasisCache:
        if self._cache is None:
            self._cache = BasisCache()
        return self._cache

    # ------------------------------------------------------------------ per-model state
    def _record(self, model) -> _ModelRecord:
        rec = self._records.get(model)
        if rec is None:
            rec = self._records[model] = _ModelRecord()
        return rec

    def reviver_for(self, model, tau: float | None = None) -> Reviver | None:
        """The model's Reviver (for ``tau``; the only one when None), or None before its first REVIVE edit."""
        rec = self._records.get(model)
        if rec is None or not rec.revivers:
            return None
        if tau is None:
            if len(rec.revivers) > 1:
                raise ValueError(f"model has Revivers for several τ {sorted(rec.revivers)}; pass tau=")
            return next(iter(rec.revivers.values()))
        return rec.revivers.get(check_revive_tau(tau))

    def set_original_weights(self, model, source) -> None:
        """Give the model's ORIGINAL weights explicitly; bases are (re)taken from them on the next REVIVE edit.

        ``source``: a mapping parameter name → tensor (e.g. a ``state_dict()`` saved before editing), a
        ``.safetensors`` file or an HF model folder (only the edited tensors are read), a folder written by
        :meth:`Reviver.save` (its bases and fingerprints are used as they are), or a :class:`Reviver`.
        Revivers the model already had are dropped.
        """
        rec = self._record(model)
        if isinstance(source, Reviver):
            rec.revivers, rec.originals = {source.tau: source}, None
        elif isinstance(source, (str, os.PathLike)) and is_reviver_dir(source):
            rev = Reviver.load(source, cache=self.cache)
            rec.revivers, rec.originals = {rev.tau: rev}, None
        elif isinstance(source, (Mapping, str, os.PathLike)):
            rec.originals = OriginalWeights(source)
            rec.revivers = {}
        else:
            raise TypeError(
                "set_original_weights: source must be a state dict, a .safetensors file or folder, "
                f"a saved Reviver folder or a Reviver, got {type(source).__name__}"
            )
        rec.warned = False

    def forget(self, model) -> None:
        """Drop everything kept for ``model`` (its next REVIVE edit takes bases from its current weights)."""
        self._records.pop(model, None)
        self._plain_edited.discard(model)

    def last_report(self, model) -> dict | None:
        """What the last REVIVE call did to ``model``: method, τ, and per weight ‖ΔW‖ before/after projection."""
        rec = self._records.get(model)
        return None if rec is None else rec.last_report

    def _protected_reviver(self, model, tau: float, names: list[str], alg_name: str) -> Reviver:
        rec = self._record(model)
        rev = rec.revivers.get(tau)
        if rev is None:
            rev = rec.revivers[tau] = Reviver(tau, cache=self.cache)
        todo = [n for n in names if not rev.is_protected(n)]
        if not todo:
            return rev
        originals = None
        if rec.originals is not None:
            originals = rec.originals.subset(todo)
        elif not rec.warned and (model in self._plain_edited or rec.revived_names.intersection(todo)):
            rec.warned = True
            warnings.warn(
                f"REVIVE ({alg_name}) is switched on for a model that was already edited in this process; "
                "its dominant bases are being taken from the CURRENT weights, which are not the originals if "
                "those edits were kept (sequential editing). Give the original weights explicitly with "
                "revive_plugin.easyedit.set_original_weights(model, state_dict | 'model.safetensors' | "
                "model_folder | saved_reviver_folder) before the next edit.",
                ReviveOriginalsWarning,
                stacklevel=4,
            )
        rev.protect(model, todo, originals=originals)
        return rev

    # ------------------------------------------------------------------ the wrapper
    def wrap(self, apply_fn: Callable, alg_name: str, native_method: str | None = None) -> Callable:
        """``apply_fn`` with REVIVE behind ``hparams.use_revive``.

        ``native_method``: this project's methods (revive_plugin.editing), which project each layer's ΔW
        themselves; their sequential state is given the same Reviver, so both use one set of original bases.
        """
        adapter = self

        @functools.wraps(apply_fn)
        def apply_with_revive(model, tok, requests, hparams, *args, **kwargs):
            if not getattr(hparams, "use_revive", False):
                adapter._plain_edited.add(model)
                return apply_fn(model, tok, requests, hparams, *args, **kwargs)
            return adapter._revive_call(apply_fn, alg_name, native_method, model, tok, requests, hparams, args, kwargs)

        apply_with_revive.__revive_original__ = apply_fn
        apply_with_revive.__revive_alg_name__ = alg_name
        return apply_with_revive

    def _revive_call(self, apply_fn, alg_name, native_method, model, tok, requests, hparams, args, kwargs):
        tau = check_revive_tau(getattr(hparams, "revive_tau", DEFAULT_TAU))
        names = edited_param_names(model, hparams)
        params = {n: get_parameter(model, n) for n in names}
        reviver = self._protected_reviver(model, tau, names, alg_name)
        if native_method is not None:
            self._share_with_native_state(model, native_method, reviver, kwargs)
        before = {n: p.detach().clone() for n, p in params.items()}
        out = apply_fn(model, tok, requests, hparams, *args, **kwargs)
        edited = out[0] if isinstance(out, tuple) and out and isinstance(out[0], torch.nn.Module) else model
        report = {}
        with torch.no_grad():
            for n in names:
                raw = float((get_parameter(edited, n).detach() - before[n]).float().norm())
                safe = reviver.apply_(edited, n, before[n])
                report[n] = {"delta_norm": raw, "projected_norm": float(safe.float().norm())}
        del before
        rec = self._record(model)
        rec.revived_names.update(names)
        rec.last_report = {"alg_name": alg_name, "tau": tau, "weights": report}
        total = sum(r["delta_norm"] ** 2 for r in report.values()) ** 0.5
        kept = sum(r["projected_norm"] ** 2 for r in report.values()) ** 0.5
        log.info(
            "REVIVE (%s, tau=%g): projected the change of %d weights off their original dominant subspace; "
            "kept %.1f%% of ||dW||", alg_name, tau, len(names), 100.0 * kept / total if total > 0 else 100.0,
        )
        return out

    @staticmethod
    def _share_with_native_state(model, method: str, reviver: Reviver, kwargs) -> None:
        from ..editing.state import attached_state

        state = kwargs.get("state") or attached_state(model, method)
        if getattr(state, "reviver", None) is None:
            state.reviver = reviver
