"""Which weight matrices an analysis touches, and in-place edits that are always undone."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

from ..arch import arch_for


@dataclass(frozen=True)
class Target:
    """One parameter analysed. ``transposed``: stored as (in, out) (GPT-2 Conv1D), so the
    math matrix W (out x in, Eq. 1) is the transpose of the stored tensor."""

    name: str
    transposed: bool = False

    def math_view(self, weight: torch.Tensor) -> torch.Tensor:
        """The stored tensor as W (out x in)."""
        return weight.T if self.transposed else weight

    def stored_view(self, matrix: torch.Tensor) -> torch.Tensor:
        """A W-oriented (out x in) matrix in the parameter's storage layout."""
        return matrix.T if self.transposed else matrix


def _rewrite_template(model, module_tmp: str | None) -> tuple[str, bool]:
    spec = arch_for(model)
    return module_tmp or spec.rewrite_module_tmp, spec.transposed


def storage_transposed(model) -> bool:
    """True when the model stores its edited FFN matrices as (in, out) (GPT-2 Conv1D)."""
    try:
        return _rewrite_template(model, None)[1]
    except ValueError:
        return False


def parse_layers(spec: str | Iterable[int]) -> list[int]:
    """'4-8' / '4,5,6' / '4-6,9' / iterable of ints -> sorted unique layer indices."""
    if not isinstance(spec, str):
        layers = [int(x) for x in spec]
    else:
        layers = []
        for part in spec.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part:
                lo, hi = part.split("-", 1)
                try:
                    lo_i, hi_i = int(lo), int(hi)
                except ValueError:
                    raise ValueError(f"bad layer range {part!r} in {spec!r}") from None
                if hi_i < lo_i:
                    raise ValueError(f"bad layer range {part!r} in {spec!r}")
                layers.extend(range(lo_i, hi_i + 1))
            else:
                try:
                    layers.append(int(part))
                except ValueError:
                    raise ValueError(f"bad layer index {part!r} in {spec!r}") from None
    if not layers:
        raise ValueError(f"no layers given in {spec!r}")
    return sorted(set(layers))


def resolve_targets(model, layers: Sequence[int] | str, module_tmp: str | None = None,
                    params: Sequence[str] | None = None) -> list[Target]:
    """Targets for ``layers`` of the model's edited FFN matrix (``rewrite_module_tmp``), or the
    explicit parameter names ``params``. Every name must exist and be a 2-D tensor."""
    tmp, transposed = _rewrite_template(model, module_tmp)
    if params:
        names = list(params)
    else:
        names = [f"{tmp.format(layer)}.weight" for layer in parse_layers(layers)]
    available = dict(model.named_parameters())
    targets = []
    for name in names:
        if name not in available:
            raise ValueError(f"parameter {name!r} not found in the model")
        if available[name].dim() != 2:
            raise ValueError(f"parameter {name!r} is not a matrix (shape {tuple(available[name].shape)})")
        targets.append(Target(name, transposed))
    return targets


@contextlib.contextmanager
def restored(model, names: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Yield clones of the named parameters and write them back on exit (even on errors)."""
    params = dict(model.named_parameters())
    originals = {n: params[n].detach().clone() for n in names}
    try:
        yield originals
    finally:
        with torch.no_grad():
            for n, value in originals.items():
                params[n].copy_(value)
