"""Original (pre-edit) weights given explicitly: a state dict, a safetensors file or an HF model folder.

Only the tensors that REVIVE needs are read (lazily, by name, with ``safetensors.safe_open``); nothing is
unpickled. Checkpoint key prefixes may differ from the model's parameter names (GPT-2 checkpoints store
``h.13.mlp.c_proj.weight`` for ``transformer.h.13.mlp.c_proj.weight``): a key that matches the name up to
leading components is accepted when it is the only such key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .._util import key_matches


def _match(name: str, keys) -> str | None:
    hits = key_matches(name, keys)
    if len(hits) > 1:
        raise ValueError(f"original weights: parameter {name!r} matches several keys {hits}")
    return hits[0] if hits else None


class OriginalWeights:
    """Name → original tensor, from a mapping or from safetensors files (read on demand)."""

    def __init__(self, source: Mapping[str, torch.Tensor] | str | os.PathLike):
        self._tensors: Mapping[str, torch.Tensor] | None = None
        self._files: dict[str, Path] = {}
        if isinstance(source, Mapping):
            bad = [k for k, v in source.items() if not torch.is_tensor(v)]
            if bad:
                raise TypeError(f"original weights must be tensors; not for {bad[:3]}")
            self._tensors = source
            self.description = f"state dict with {len(source)} tensors"
            return
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(
                "original weights must be a mapping name -> tensor, a .safetensors file or a folder of them, "
                f"got {type(source).__name__}"
            )
        path = Path(source)
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted(path.glob("*.safetensors"))
        else:
            raise FileNotFoundError(f"original weights not found: {path}")
        if not files or any(f.suffix != ".safetensors" for f in files):
            raise ValueError(f"original weights: {path} holds no .safetensors file (pickled checkpoints are not read)")
        from safetensors import safe_open

        for f in files:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():
                    self._files[key] = f
        self.description = str(path)

    def keys(self):
        return self._tensors.keys() if self._tensors is not None else self._files.keys()

    def has(self, name: str) -> bool:
        return _match(name, self.keys()) is not None

    def get(self, name: str) -> torch.Tensor:
        """The original value of parameter ``name`` (KeyError naming the source when absent)."""
        key = _match(name, self.keys())
        if key is None:
            raise KeyError(f"original weights ({self.description}) have no tensor for parameter {name!r}")
        if self._tensors is not None:
            return self._tensors[key]
        from safetensors import safe_open

        with safe_open(str(self._files[key]), framework="pt") as fh:
            return fh.get_tensor(key)

    def subset(self, names) -> dict[str, torch.Tensor]:
        return {n: self.get(n) for n in names}


def is_reviver_dir(path) -> bool:
    """Whether ``path`` is a folder written by :meth:`revive_plugin.Reviver.save`."""
    p = Path(path)
    if not (p / "reviver.json").is_file():
        return False
    try:
        json.loads((p / "reviver.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return True
