"""REVIVE's settings, in one object with one validator: whether it is on, and τ (paper Eq. 5).

Every reader — the YAML loaders (this project's hparams classes and EasyEdit's, patched by
:mod:`revive_plugin.easyedit`), the native editors, the EasyEdit adapter and the bench — goes through
:func:`check_tau` / :func:`check_enabled`, or reads an hparams object with :meth:`ReviveConfig.of`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

DEFAULT_TAU = 0.1


class ReviveConfigError(ValueError):
    """``use_revive`` / ``revive_tau`` has a bad value (the message names the key)."""


def check_tau(value) -> float:
    """τ as a float strictly inside (0, 1) (Eq. 5), or :class:`ReviveConfigError` naming ``revive_tau``."""
    if isinstance(value, bool) or not isinstance(value, (Real, str)):
        raise ReviveConfigError(f"key 'revive_tau' must be a number strictly between 0 and 1, got {value!r}")
    try:
        tau = float(value)
    except ValueError:
        raise ReviveConfigError(f"key 'revive_tau' must be a number strictly between 0 and 1, got {value!r}") from None
    if math.isnan(tau) or not 0.0 < tau < 1.0:
        raise ReviveConfigError(f"key 'revive_tau' must be strictly between 0 and 1, got {value!r}")
    return tau


def check_enabled(value) -> bool:
    """``use_revive`` as a bool (true/false only: 1, "yes" … are refused)."""
    if isinstance(value, bool):
        return value
    raise ReviveConfigError(f"key 'use_revive' must be true or false, got {value!r}")


@dataclass(frozen=True)
class ReviveConfig:
    """REVIVE's settings: ``enabled`` (YAML ``use_revive``) and ``tau`` (YAML ``revive_tau``)."""

    enabled: bool = False
    tau: float = DEFAULT_TAU

    def __post_init__(self) -> None:
        object.__setattr__(self, "enabled", check_enabled(self.enabled))
        object.__setattr__(self, "tau", check_tau(self.tau))

    @classmethod
    def of(cls, hparams) -> "ReviveConfig":
        """The settings an hparams object carries (absent keys: off, τ = 0.1)."""
        return cls(getattr(hparams, "use_revive", False), getattr(hparams, "revive_tau", DEFAULT_TAU))
