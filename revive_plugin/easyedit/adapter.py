"""The REVIVE wrapper around EasyEdit ``apply_*_to_model`` functions, and its per-model state.

A wrapped call with ``hparams.use_revive`` off is the original call (one attribute check). With it on:

1. the edited parameters are ``rewrite_module_tmp(s) × layers`` (``.weight``);
2. the model's :class:`~revive_plugin.Reviver` for ``revive_tau`` protects them with the bases of their
   ORIGINAL values: the first call for a model takes them from its current weights (or from the disk
   cache), later calls reuse them although W has moved (paper §3, Appendix C), and originals given
   with :meth:`ReviveAdapter.set_original_weights` take precedence;
3. those parameters are snapshotted (W_ref) and the method runs with a :class:`~.watch.WriteWatch`:
   each host write of layer l is replaced by W_ref + P(W − W_ref) (Eq. 6) before any later forward
   reads the layer, so later layers' keys and residuals (and AlphaEdit's accumulated keys) see the
   projected update; after the call a final sweep projects whatever is left (the last write of
   ``apply_*``, writes no forward read);
4. the method's own return value, ``(model, weights_copy)``, is handed back, so EasyEdit's
   non-sequential restore still writes the pre-call weights back.

This project's own methods (registered under names the host lacks) project each layer themselves with the
same Reviver; the wrapper only hands it to them (one projection per write).

Per-model state lives in a :class:`weakref.WeakKeyDictionary` inside the adapter: it dies with the model.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cache import BasisCache
from ..reviver import Reviver, get_parameter
from ..config import ReviveConfig, ReviveConfigError, check_tau
from .originals import OriginalWeights, is_reviver_dir
from .watch import WriteWatch

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
        self._p_dir: Path | None = None  # this process's folder for null-space projectors (P_loc: null)

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
        return rec.revivers.get(check_tau(tau))

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
        A ``P_loc: null`` (AlphaEdit, SPHERE) becomes a fresh path of this process, with or without REVIVE.
        """
        adapter = self

        @functools.wraps(apply_fn)
        def apply_with_revive(model, tok, requests, hparams, *args, **kwargs):
            if native_method is None and hasattr(hparams, "P_loc") and hparams.P_loc is None:
                adapter.fill_p_loc(apply_fn, model, tok, hparams)
            if not ReviveConfig.of(hparams).enabled:
                adapter._plain_edited.add(model)
                return apply_fn(model, tok, requests, hparams, *args, **kwargs)
            return adapter._revive_call(apply_fn, alg_name, native_method, model, tok, requests, hparams, args, kwargs)

        apply_with_revive.__revive_original__ = apply_fn
        apply_with_revive.__revive_alg_name__ = alg_name
        apply_with_revive.__revive_projection__ = "native" if native_method is not None else "per-layer"
        return apply_with_revive

    def fill_p_loc(self, apply_fn: Callable, model, tok, hparams) -> str:
        """Give ``hparams.P_loc`` a fresh path of this process holding P computed now by the host.

        EasyEdit main's AlphaEdit (and SPHERE) ``os.stat`` ``P_loc``; when the file is absent they
        recompute P on every call and save it to ``./null_space_project.pt`` (not to ``P_loc``). Here P
        is computed once per hparams object with the host's own ``get_project`` (from the covariance
        statistics in ``stats_dir``), saved under a temporary folder of this process, and the host is made
        to load that file on its next call (its module-global ``P_loaded`` is reset). Never a file from an
        earlier run.
        """
        module = sys.modules.get(getattr(apply_fn, "__module__", ""))
        get_project = getattr(module, "get_project", None)
        if get_project is None or not hasattr(module, "P_loaded"):
            raise ReviveConfigError(
                f"P_loc is null but {getattr(apply_fn, '__module__', apply_fn)} has no get_project/P_loaded: "
                "set P_loc in the YAML to a path for the null-space projector"
            )
        if self._p_dir is None:
            self._p_dir = Path(tempfile.mkdtemp(prefix="revive-easyedit-P-"))
        path = self._p_dir / f"null_space_project-{len(list(self._p_dir.iterdir()))}.pt"
        P = torch.stack([get_project(model, tok, layer, hparams).cpu() for layer in hparams.layers])
        torch.save(P, path)
        module.P_loaded = False
        hparams.P_loc = str(path)
        log.info("P_loc was null: null-space projector computed for layers %s and saved to %s",
                 list(hparams.layers), path)
        return hparams.P_loc

    def _revive_call(self, apply_fn, alg_name, native_method, model, tok, requests, hparams, args, kwargs):
        tau = ReviveConfig.of(hparams).tau
        names = edited_param_names(model, hparams)
        for n in names:
            get_parameter(model, n)  # a clear KeyError before anything runs
        reviver = self._protected_reviver(model, tau, names, alg_name)
        rec = self._record(model)
        if native_method is not None:
            self._share_with_native_state(model, native_method, reviver, kwargs)
            out = apply_fn(model, tok, requests, hparams, *args, **kwargs)
            rec.revived_names.update(names)
            rec.last_report = {"alg_name": alg_name, "tau": tau, "projection": "native", "weights": {}}
            return out
        before = {n: get_parameter(model, n).detach().clone() for n in names}
        copies = bool(kwargs.get("copy", args[0] if args else False))  # a deep copy would carry the hooks along
        watch = None if copies else WriteWatch(model, reviver, before)
        try:
            out = apply_fn(model, tok, requests, hparams, *args, **kwargs)
        finally:
            if watch is not None:
                watch.close()
        edited = out[0] if isinstance(out, tuple) and out and isinstance(out[0], torch.nn.Module) else model
        report = {}
        with torch.no_grad():
            for n in names:
                raw = float((get_parameter(edited, n).detach() - before[n]).float().norm())
                safe = reviver.apply_(edited, n, before[n])
                report[n] = {"delta_norm": raw, "projected_norm": float(safe.float().norm()),
                             "hook_projections": 0 if watch is None else watch.projections[n]}
        del before
        per_layer = any(r["hook_projections"] for r in report.values())
        rec.revived_names.update(names)
        rec.last_report = {"alg_name": alg_name, "tau": tau,
                           "projection": "per-layer" if per_layer else "after-call", "weights": report}
        total = sum(r["delta_norm"] ** 2 for r in report.values()) ** 0.5
        kept = sum(r["projected_norm"] ** 2 for r in report.values()) ** 0.5
        log.info(
            "REVIVE (%s, tau=%g): projected the change of %d weights off their original dominant subspace "
            "(%s); kept %.1f%% of ||dW||", alg_name, tau, len(names),
            "each layer at its write" if per_layer else "after the call",
            100.0 * kept / total if total > 0 else 100.0,
        )
        return out

    @staticmethod
    def _share_with_native_state(model, method: str, reviver: Reviver, kwargs) -> None:
        from ..editing.state import attached_state

        state = kwargs.get("state") or attached_state(model, method)
        if getattr(state, "reviver", None) is None:
            state.reviver = reviver
