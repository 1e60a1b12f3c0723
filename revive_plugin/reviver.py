"""REVIVE for a whole model: the original bases of the edited weights, kept across a sequence.

A :class:`Reviver` records, per parameter name, the dominant basis of that parameter's ORIGINAL
value (paper §3, Appendix C) the first time it is protected, and projects every later update of
it onto the complement of that basis (Eq. 6), however far the weight has moved since.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from ._io import atomic_save_safetensors, atomic_write_text
from ._util import get_parameter
from .cache import BasisCache, read_safetensors_metadata, weight_fingerprint
from .projection import DominantBasis, check_tau

STATE_VERSION = "1"


class Reviver:
    """Projects updates of protected parameters away from their original dominant subspace."""

    def __init__(self, tau: float = 0.1, cache: BasisCache | None = None):
        self.tau = check_tau(tau)
        self.cache = cache if cache is not None else BasisCache()
        self._bases: dict[str, DominantBasis] = {}
        self._fingerprints: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        return list(self._bases)

    def is_protected(self, name: str) -> bool:
        return name in self._bases

    def basis(self, name: str) -> DominantBasis:
        try:
            return self._bases[name]
        except KeyError:
            raise KeyError(
                f"parameter {name!r} is not protected: call Reviver.protect(model, [{name!r}]) "
                "before its first edit"
            ) from None

    def protect(
        self,
        model: nn.Module,
        names: Iterable[str],
        originals: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Record the bases of ``names``' original values (current values unless ``originals``).

        Names already protected keep their first basis: later calls never re-base on moved weights.
        """
        for name in names:
            if name in self._bases:
                continue
            param = get_parameter(model, name)
            weight = param.detach() if originals is None or name not in originals else originals[name]
            if tuple(weight.shape) != tuple(param.shape):
                raise ValueError(
                    f"original weight for {name!r} has shape {tuple(weight.shape)}, "
                    f"the parameter has {tuple(param.shape)}"
                )
            fp = weight_fingerprint(weight)
            basis = self.cache.get(weight.to(param.device), self.tau, fingerprint=fp)
            self._bases[name] = basis.to(param.device)
            self._fingerprints[name] = fp

    def project(self, name: str, delta: torch.Tensor) -> torch.Tensor:
        """ΔW_safe for parameter ``name`` (Eq. 6)."""
        return self.basis(name).project(delta)

    def leakage(self, name: str, delta: torch.Tensor) -> tuple[float, float]:
        return self.basis(name).leakage(delta)

    @torch.no_grad()
    def apply_(self, model: nn.Module, name: str, before: torch.Tensor) -> torch.Tensor:
        """Replace the change of ``name`` since ``before`` by its projection; returns ΔW_safe."""
        param = get_parameter(model, name)
        delta = param.detach() - before.to(param.device, param.dtype)
        safe = self.project(name, delta)
        param.copy_((before.to(param.device, torch.promote_types(param.dtype, torch.float32)) + safe).to(param.dtype))
        return safe

    def state_dict(self) -> dict:
        """JSON-able summary: τ and, per name, the original weight's fingerprint and k."""
        return {
            "version": STATE_VERSION,
            "tau": self.tau,
            "params": {n: {"fingerprint": self._fingerprints[n], "k": self._bases[n].k} for n in self._bases},
        }

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``reviver.json`` and ``reviver.safetensors`` (the bases) into ``directory``."""
        directory = Path(directory)
        tensors = {}
        for i, (name, b) in enumerate(self._bases.items()):
            tensors.update({f"{i}.U": b.U, f"{i}.V": b.V, f"{i}.S": b.singular_values})
        state = self.state_dict()
        state["order"] = list(self._bases)
        atomic_save_safetensors(tensors, directory / "reviver.safetensors", {"state": json.dumps(state)})
        atomic_write_text(directory / "reviver.json", json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike, cache: BasisCache | None = None,
             device: torch.device | str | None = None) -> "Reviver":
        """Restore a Reviver written by :meth:`save` (bases verified against their header)."""
        from safetensors.torch import load_file

        path = Path(directory) / "reviver.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"no saved REVIVE state at {path}")
        try:
            state = json.loads(read_safetensors_metadata(path)["state"])
            tensors = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any failure means the file cannot be trusted
            raise ValueError(f"corrupt REVIVE state file {path}: {e}") from None
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"REVIVE state {path} has version {state.get('version')!r}, expected {STATE_VERSION}")
        rev = cls(state["tau"], cache)
        for i, name in enumerate(state["order"]):
            info = state["params"][name]
            try:
                basis = DominantBasis(
                    U=tensors[f"{i}.U"], V=tensors[f"{i}.V"], singular_values=tensors[f"{i}.S"],
                    k=int(info["k"]), tau=rev.tau,
                )
            except KeyError as e:
                raise ValueError(f"REVIVE state {path} lacks tensor {e}") from None
            if basis.U.shape[1] != basis.k or basis.V.shape[1] != basis.k:
                raise ValueError(f"REVIVE state {path}: basis of {name!r} does not match its k")
            rev._bases[name] = basis.to(device) if device is not None else basis
            rev._fingerprints[name] = info["fingerprint"]
        return rev
