"""Locate-then-edit methods (MEMIT, AlphaEdit, RECT, PRUNE, NSE, DeltaEdit) on one shared core.

Importing this package does not import transformers. Public API::

    from revive_plugin.editing import METHODS, get_method, make_editor, load_hparams
    hp = load_hparams("MEMIT", model="smollm2-135m", use_revive=True)
    editor = make_editor("MEMIT", model, tok, hp)
    editor.edit(requests); editor.save(dir); editor.load(dir)

EasyEdit-style functions: ``apply_memit_to_model``, ``apply_AlphaEdit_to_model``, ``apply_rect_to_model``,
``apply_prune_to_model``, ``apply_nse_to_model``, ``apply_deltaedit_to_model`` — ``(model, tok, requests,
hparams, copy=False, return_orig_weights=True, state=None, **kwargs) -> (model, weights_copy)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .alphaedit import AlphaEditEditor, apply_AlphaEdit_to_model, apply_alphaedit_to_model
from .deltaedit import DeltaEditEditor, apply_deltaedit_to_model
from .editor import Editor
from .hparams import (
    AlphaEditHyperParams,
    DeltaEditHyperParams,
    EditHParams,
    HParamsError,
    MEMITHyperParams,
    NSEHyperParams,
    PRUNEHyperParams,
    RECTHyperParams,
)
from .hparams_files import hparams_file
from .memit import MEMITEditor, apply_memit_to_model
from .nse import NSEEditor, apply_nse_to_model
from .prune import PRUNEEditor, apply_prune_to_model
from .rect import RECTEditor, apply_rect_to_model
from .state import EditState, attach_state, attached_state, reset_state


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: canonical name, hparams class, EasyEdit apply function, editor class."""

    name: str
    hparams_cls: type
    apply_fn: Callable
    editor_cls: type


METHODS: dict[str, MethodSpec] = {
    "MEMIT": MethodSpec("MEMIT", MEMITHyperParams, apply_memit_to_model, MEMITEditor),
    "AlphaEdit": MethodSpec("AlphaEdit", AlphaEditHyperParams, apply_AlphaEdit_to_model, AlphaEditEditor),
    "RECT": MethodSpec("RECT", RECTHyperParams, apply_rect_to_model, RECTEditor),
    "PRUNE": MethodSpec("PRUNE", PRUNEHyperParams, apply_prune_to_model, PRUNEEditor),
    "NSE": MethodSpec("NSE", NSEHyperParams, apply_nse_to_model, NSEEditor),
    "DeltaEdit": MethodSpec("DeltaEdit", DeltaEditHyperParams, apply_deltaedit_to_model, DeltaEditEditor),
}

def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` called ``name`` (case-insensitive)."""
    for key, spec in METHODS.items():
        if key.lower() == str(name).lower():
            return spec
    raise ValueError(f"unknown editing method {name!r}; known: {list(METHODS)}")


def load_hparams(method: str, model: str = "smollm2-135m", hparams_dir=None, **overrides):
    """Read ``<METHOD>/<model>.yaml`` from ``hparams_dir`` when it has one, else the YAML shipped in the
    package (``revive_plugin/hparams/``), and apply ``overrides`` (validated like file keys)."""
    spec = get_method(method)
    with hparams_file(spec.name, model, hparams_dir) as path:
        hp = spec.hparams_cls.from_hparams(path)
    return hp.replace(**overrides) if overrides else hp


def make_editor(method: str, model, tok, hparams=None, state: EditState | None = None, **kwargs) -> Editor:
    """An :class:`Editor` of ``method`` for ``model`` (hparams: object, dict, YAML path or None = defaults)."""
    spec = get_method(method)
    if hparams is None:
        hparams = spec.hparams_cls()
    return spec.editor_cls(model, tok, hparams, state=state, **kwargs)


__all__ = [
    "METHODS", "MethodSpec", "get_method", "load_hparams", "make_editor", "Editor", "EditState",
    "attached_state", "attach_state", "reset_state", "HParamsError", "EditHParams",
    "MEMITHyperParams", "AlphaEditHyperParams", "RECTHyperParams", "PRUNEHyperParams", "NSEHyperParams",
    "DeltaEditHyperParams",
    "MEMITEditor", "AlphaEditEditor", "RECTEditor", "PRUNEEditor", "NSEEditor", "DeltaEditEditor",
    "apply_memit_to_model", "apply_AlphaEdit_to_model", "apply_alphaedit_to_model", "apply_rect_to_model",
    "apply_prune_to_model", "apply_nse_to_model", "apply_deltaedit_to_model",
]
