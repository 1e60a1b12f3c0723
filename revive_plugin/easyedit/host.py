"""Finding the EasyEdit host: its ``ALG_DICT``, its hparams classes and which release it is.

Works with EasyEdit main (a source checkout; ``BaseEditor.edit(..., sequential_edit=...)``) and the
registry wheel ``easyeditor==0.0.1.dev0`` (``edit(..., keep_original_weight=...)``). Both keep the
registry in ``easyeditor.util.alg_dict.ALG_DICT`` and derive every hparams class from
``easyeditor.util.hparams.HyperParams``.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from types import ModuleType

#: Locate-then-edit methods of EasyEdit: each adds ΔW to ``rewrite_module_tmp(s) × layers`` weights.
LOCATE_THEN_EDIT = ("ROME", "MEMIT", "MEMIT-FE", "PMET", "R-ROME", "EMMET", "EAMET", "AlphaEdit", "SPHERE", "CORE")


class EasyEditNotFoundError(ImportError):
    """No importable ``easyeditor`` package."""


@dataclass(frozen=True)
class Host:
    """The imported EasyEdit: package, registry dict, hparams base class, release flavour."""

    package: ModuleType
    alg_dict: dict
    hparams_base: type
    flavor: str  # "main" (sequential_edit=) or "wheel" (keep_original_weight=)

    @property
    def location(self) -> str:
        return str(getattr(self.package, "__file__", "?"))

    def hparams_classes(self) -> list[type]:
        """Every subclass of the host's ``HyperParams`` that is imported (depth-first, no repeats)."""
        seen: list[type] = []
        stack = list(self.hparams_base.__subclasses__())
        while stack:
            cls = stack.pop()
            if cls not in seen:
                seen.append(cls)
                stack.extend(cls.__subclasses__())
        return seen


def import_host() -> Host:
    """Import ``easyeditor`` (clear :class:`EasyEditNotFoundError` when absent or broken)."""
    try:
        package = importlib.import_module("easyeditor")
        alg_module = importlib.import_module("easyeditor.util.alg_dict")
        hp_module = importlib.import_module("easyeditor.util.hparams")
    except ImportError as e:
        raise EasyEditNotFoundError(
            "revive_plugin.easyedit needs EasyEdit, but `import easyeditor` failed "
            f"({type(e).__name__}: {e}). Install it (`pip install easyeditor`, or put an EasyEdit source "
            "checkout on PYTHONPATH, e.g. `export PYTHONPATH=/path/to/EasyEdit`) and its dependencies. "
            "The REVIVE core (`import revive_plugin`) works without EasyEdit."
        ) from e
    alg_dict = getattr(alg_module, "ALG_DICT", None)
    base = getattr(hp_module, "HyperParams", None)
    if not isinstance(alg_dict, dict) or not isinstance(base, type):
        raise EasyEditNotFoundError(
            f"the easyeditor at {getattr(package, '__file__', '?')} has no util.alg_dict.ALG_DICT / "
            "util.hparams.HyperParams: not a supported EasyEdit release"
        )
    return Host(package=package, alg_dict=alg_dict, hparams_base=base, flavor=_flavor(package))


def _flavor(package: ModuleType) -> str:
    editor = getattr(package, "BaseEditor", None)
    if editor is None:
        return "unknown"
    params = inspect.signature(editor.edit).parameters
    if "sequential_edit" in params:
        return "main"
    if "keep_original_weight" in params:
        return "wheel"
    return "unknown"
