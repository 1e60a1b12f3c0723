"""Sequential edit state: one object per (model, method), saved/restored as safetensors + JSON.

Holds everything a method carries from round to round — the covariance E[kkᵀ] per layer, original
weights of the edited parameters (REVIVE basis, PRUNE's reference, NSE's rewinding), method tensors
(AlphaEdit's projector P and accumulated keys, PRUNE's accumulated update, …) and the
:class:`~revive_plugin.reviver.Reviver`. Nothing lives in module globals: EasyEdit-style ``apply_*``
calls keep their state attached to the model object through a weak-keyed map (:func:`attached_state`),
which dies with the model and is cleared by :func:`reset_state`.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import torch

from .._io import atomic_save_safetensors, atomic_write_text

STATE_VERSION = 1
_TENSORS = "state.safetensors"
_META = "state.json"

#: Kinds of per-module / per-parameter tensors every method may keep (key ``<kind>/<name>``, see
#: :meth:`EditState.of`); a method's own kinds are constants of its module.
COVARIANCE = "cov"  # E[kkᵀ] of a rewrite module's input
ORIGINAL = "orig"  # the original (pre-edit) value of an edited parameter
EDITED_KEYS = "cache_c"  # Σ k kᵀ of the keys edited so far at a rewrite module (AlphaEdit, NSE)

_ATTACHED: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, EditState]]" = weakref.WeakKeyDictionary()


class EditState:
    """Tensors + JSON metadata + optional Reviver of one method's edit sequence on one model."""

    def __init__(self, method: str):
        self.method = method
        self.tensors: dict[str, torch.Tensor] = {}
        self.meta: dict = {"rounds": 0, "edits": 0}
        self.reviver = None

    def get(self, key: str) -> torch.Tensor | None:
        return self.tensors.get(key)

    def set(self, key: str, value: torch.Tensor) -> None:
        self.tensors[key] = value.detach()

    def of(self, kind: str, name: str) -> torch.Tensor | None:
        """The ``kind`` tensor of module or parameter ``name`` (None when not recorded)."""
        return self.get(f"{kind}/{name}")

    def put(self, kind: str, name: str, value: torch.Tensor) -> None:
        """Record the ``kind`` tensor of module or parameter ``name``."""
        self.set(f"{kind}/{name}", value)

    def save(self, directory) -> Path:
        """Write ``state.safetensors``, ``state.json`` (and ``reviver/``) into ``directory``."""
        directory = Path(directory)
        atomic_save_safetensors(self.tensors, directory / _TENSORS, {"method": self.method}, what="edit state")
        meta = {"version": STATE_VERSION, "method": self.method, "meta": self.meta,
                "revive": self.reviver is not None}
        atomic_write_text(directory / _META, json.dumps(meta, indent=2), what="edit state")
        if self.reviver is not None:
            self.reviver.save(directory / "reviver")
        return directory

    @classmethod
    def load(cls, directory, device=None) -> "EditState":
        """Restore a state written by :meth:`save` (tensors moved to ``device`` when given)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path = directory / _META
        if not meta_path.is_file() or not (directory / _TENSORS).is_file():
            raise FileNotFoundError(f"no saved edit state in {directory}")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"corrupt edit state file {meta_path}: {e}") from None
        if meta.get("version") != STATE_VERSION:
            raise ValueError(f"{meta_path}: version {meta.get('version')!r}, expected {STATE_VERSION}")
        state = cls(meta["method"])
        state.meta = dict(meta.get("meta", {}))
        tensors = load_file(str(directory / _TENSORS))
        state.tensors = {k: (v.to(device) if device is not None else v) for k, v in tensors.items()}
        if meta.get("revive"):
            from ..reviver import Reviver

            state.reviver = Reviver.load(directory / "reviver", device=device)
        return state


def attached_state(model: torch.nn.Module, method: str) -> EditState:
    """The state of ``method`` attached to ``model`` (created empty on first use)."""
    per_model = _ATTACHED.setdefault(model, {})
    if method not in per_model:
        per_model[method] = EditState(method)
    return per_model[method]


def attach_state(model: torch.nn.Module, state: EditState) -> None:
    """Attach ``state`` to ``model`` (replacing its state for ``state.method``)."""
    _ATTACHED.setdefault(model, {})[state.method] = state


def reset_state(model: torch.nn.Module, method: str | None = None) -> None:
    """Forget the attached state of ``method`` (all methods when None); weights are not touched."""
    per_model = _ATTACHED.get(model)
    if per_model is None:
        return
    if method is None:
        per_model.clear()
    else:
        per_model.pop(method, None)
