"""REVIVE inside EasyEdit: ``import revive_plugin.easyedit`` and two YAML keys.

Importing this module calls :func:`enable`, which

* teaches every hparams class of the importable ``easyeditor`` the keys ``use_revive`` (default false)
  and ``revive_tau`` (default 0.1, strictly between 0 and 1);
* wraps every locate-then-edit entry of ``ALG_DICT`` (ROME, MEMIT, MEMIT-FE, PMET, R-ROME, EMMET, EAMET,
  AlphaEdit, SPHERE, CORE — those the host has) so that, with ``use_revive: true``, each edited weight's
  change is projected off the dominant subspace of its ORIGINAL value (paper §3, Eq. 5-6) at the host's
  write, before later layers are solved (:mod:`.watch`);
* registers this project's methods (RECT, PRUNE, NSE, and MEMIT/AlphaEdit where the host lacks them).

Import it before building the editor: ``BaseEditor`` looks its method up in ``ALG_DICT`` when it is built.
:func:`disable` puts the host back exactly as it was. ``import revive_plugin`` never imports EasyEdit.
"""

from __future__ import annotations

import logging
import os

from ..cache import BasisCache
from .adapter import ReviveAdapter, ReviveOriginalsWarning, edited_param_names
from .hparams_patch import ClassPatches, ReviveConfigError
from .host import LOCATE_THEN_EDIT, EasyEditNotFoundError, Host, import_host

log = logging.getLogger("revive_plugin.easyedit")
_ABSENT = object()


class EasyEditPlugin:
    """The patch of one EasyEdit host: what was replaced, to undo it exactly, and the adapter."""

    def __init__(self) -> None:
        self.adapter = ReviveAdapter()
        self.host: Host | None = None
        self._classes = ClassPatches()
        self._entries: dict[str, tuple[object, object]] = {}  # name -> (original or _ABSENT, wrapper)
        self._attrs: list[str] = []

    @property
    def enabled(self) -> bool:
        return self.host is not None

    def enable(self, cache: BasisCache | str | os.PathLike | bool | None = None) -> Host:
        if cache is not None:
            self.adapter.set_cache(cache)
        if self.host is not None:
            return self.host
        host = import_host()
        try:
            self._patch(host)
        except BaseException:
            self._unpatch(host)
            raise
        self.host = host
        log.info(
            "REVIVE enabled for EasyEdit (%s, %s): wrapped %s; registered %s",
            host.flavor, host.location, self.wrapped(), self.registered(),
        )
        return host

    def disable(self) -> None:
        if self.host is None:
            return
        self._unpatch(self.host)
        self.host = None

    def wrapped(self) -> list[str]:
        return [n for n, (orig, _) in self._entries.items() if orig is not _ABSENT]

    def registered(self) -> list[str]:
        return [n for n, (orig, _) in self._entries.items() if orig is _ABSENT]

    def projection_points(self) -> dict[str, str]:
        return {n: wrapper.__revive_projection__ for n, (_, wrapper) in self._entries.items()}

    # ------------------------------------------------------------------ patching
    def _patch(self, host: Host) -> None:
        from ..editing import METHODS

        self._classes.patch_base(host.hparams_base)
        for cls in (host.hparams_base, *host.hparams_classes()):
            self._classes.patch_class(cls)
        for name in LOCATE_THEN_EDIT:
            fn = host.alg_dict.get(name)
            if fn is not None and getattr(fn, "__revive_original__", None) is None:
                self._set_entry(host, name, fn, self.adapter.wrap(fn, name))
        for name, spec in METHODS.items():
            if name in host.alg_dict:
                continue
            wrapper = self.adapter.wrap(spec.apply_fn, name, native_method=spec.editor_cls.method)
            self._set_entry(host, name, _ABSENT, wrapper)
            cls_name = spec.hparams_cls.__name__
            if not hasattr(host.package, cls_name):
                setattr(host.package, cls_name, spec.hparams_cls)
                self._attrs.append(cls_name)

    def _set_entry(self, host: Host, name: str, original, wrapper) -> None:
        self._entries[name] = (original, wrapper)
        host.alg_dict[name] = wrapper

    def _unpatch(self, host: Host) -> None:
        for name, (original, wrapper) in self._entries.items():
            if host.alg_dict.get(name) is not wrapper:
                continue  # replaced by someone else since: leave it
            if original is _ABSENT:
                del host.alg_dict[name]
            else:
                host.alg_dict[name] = original
        self._entries.clear()
        for attr in self._attrs:
            if hasattr(host.package, attr):
                delattr(host.package, attr)
        self._attrs.clear()
        self._classes.restore()


PLUGIN = EasyEditPlugin()


def enable(cache: BasisCache | str | os.PathLike | bool | None = None) -> Host:
    """Patch the importable EasyEdit (idempotent). ``cache``: basis cache (BasisCache, folder, False = memory)."""
    return PLUGIN.enable(cache)


def disable() -> None:
    """Undo :func:`enable`: ALG_DICT, hparams classes and package attributes are restored exactly."""
    PLUGIN.disable()


def is_enabled() -> bool:
    return PLUGIN.enabled


def status() -> dict:
    """Which host is patched, which ALG_DICT entries are wrapped / added, and where each one projects.

    ``projection`` per method: ``"per-layer"`` (host methods: each layer's write is projected before the
    next forward reads it, plus an after-call sweep for the writes no forward reads; see
    :mod:`~revive_plugin.easyedit.watch`) or ``"native"`` (this project's methods project each layer
    themselves). ``last_report(model)["projection"]`` says which point actually acted in a call
    (``"after-call"`` when the host function ran no forward after its writes, e.g. one-layer ROME).
    """
    host = PLUGIN.host
    return {
        "enabled": host is not None,
        "easyeditor": None if host is None else host.location,
        "flavor": None if host is None else host.flavor,
        "wrapped": PLUGIN.wrapped(),
        "registered": PLUGIN.registered(),
        "projection": PLUGIN.projection_points(),
    }


def reviver_for(model, tau: float | None = None):
    """The :class:`~revive_plugin.Reviver` holding ``model``'s original bases (None before its first REVIVE edit)."""
    return PLUGIN.adapter.reviver_for(model, tau)


def set_original_weights(model, source) -> None:
    """Give ``model``'s original weights (state dict, safetensors file/folder, saved Reviver folder or Reviver)."""
    PLUGIN.adapter.set_original_weights(model, source)


def forget(model) -> None:
    """Drop REVIVE's state for ``model``."""
    PLUGIN.adapter.forget(model)


def last_report(model) -> dict | None:
    """Per weight ‖ΔW‖ before and after the projection, for the last REVIVE edit of ``model``."""
    return PLUGIN.adapter.last_report(model)


__all__ = [
    "LOCATE_THEN_EDIT", "EasyEditNotFoundError", "EasyEditPlugin", "PLUGIN", "ReviveAdapter",
    "ReviveConfigError", "ReviveOriginalsWarning", "disable", "edited_param_names", "enable", "forget",
    "is_enabled", "last_report", "reviver_for", "set_original_weights", "status",
]

enable()
