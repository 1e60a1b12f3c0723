"""Teach the host's hparams classes two YAML keys: ``use_revive`` (bool) and ``revive_tau`` (float in (0, 1)).

EasyEdit's ``from_hparams(path)`` reads the YAML and calls ``cls(**config)``, so an unknown key raises
``TypeError``. Each class's own ``__init__`` is wrapped to take the two keys out, validate them and set
them as attributes after the original ``__init__`` ran (validated by :mod:`revive_plugin.config`); ``from_hparams``/``from_json`` are wrapped only
to put the file name into a validation error. The base class gets class-level defaults
(``use_revive = False``, ``revive_tau = 0.1``), so a YAML without the keys behaves exactly as before.
:class:`ClassPatches` keeps every replaced attribute and puts the originals back on :meth:`restore`.
"""

from __future__ import annotations

import functools

from ..config import DEFAULT_TAU, ReviveConfigError, check_enabled, check_tau

KEYS = ("use_revive", "revive_tau")
_ABSENT = object()
_LOADERS = ("from_hparams", "from_json")


def _wrap_init(init):
    @functools.wraps(init)
    def __init__(self, *args, use_revive=_ABSENT, revive_tau=_ABSENT, **kwargs):
        flags = {}
        if use_revive is not _ABSENT:
            flags["use_revive"] = check_enabled(use_revive)
        if revive_tau is not _ABSENT:
            flags["revive_tau"] = check_tau(revive_tau)
        init(self, *args, **kwargs)
        for key, value in flags.items():
            setattr(self, key, value)

    __init__.__revive_original__ = init
    return __init__


def _wrap_loader(loader: classmethod, name: str) -> classmethod:
    func = loader.__func__

    @functools.wraps(func)
    def load(cls, path, *args, **kwargs):
        try:
            return func(cls, path, *args, **kwargs)
        except ReviveConfigError as e:
            raise ReviveConfigError(f"{path}: {e}") from None

    load.__revive_original__ = func
    return classmethod(load)


class ClassPatches:
    """Replaced class attributes, restorable exactly."""

    def __init__(self) -> None:
        self._saved: list[tuple[type, str, object]] = []

    def _set(self, cls: type, name: str, value) -> None:
        self._saved.append((cls, name, cls.__dict__.get(name, _ABSENT)))
        setattr(cls, name, value)

    def patch_base(self, base: type) -> None:
        """Class-level defaults on the hparams base class (only where it has none)."""
        if "use_revive" not in base.__dict__:
            self._set(base, "use_revive", False)
        if "revive_tau" not in base.__dict__:
            self._set(base, "revive_tau", DEFAULT_TAU)

    def patch_class(self, cls: type) -> bool:
        """Wrap ``cls``'s own ``__init__`` and loaders; False when the class already has the keys."""
        if any(k in getattr(cls, "__dataclass_fields__", {}) for k in KEYS):
            return False
        own = cls.__dict__
        if "__init__" in own:
            self._set(cls, "__init__", _wrap_init(own["__init__"]))
        for name in _LOADERS:
            if isinstance(own.get(name), classmethod):
                self._set(cls, name, _wrap_loader(own[name], name))
        return True

    def restore(self) -> None:
        """Put every replaced attribute back (latest first)."""
        while self._saved:
            cls, name, original = self._saved.pop()
            if original is _ABSENT:
                if name in cls.__dict__:
                    delattr(cls, name)
            else:
                setattr(cls, name, original)

    def __len__(self) -> int:
        return len(self._saved)
