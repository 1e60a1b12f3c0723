"""Cache of dominant bases, in memory and on disk (safetensors), keyed by weight fingerprint + τ.

A file holds U_k, V_k and all singular values of one original weight; its header records the
format version, the weight's fingerprint, shape and dtype, τ and k. Every load is verified
against the weight being protected; a corrupt, truncated, stale or mismatching file is reported
and recomputed, never used. Writes are atomic (temporary file + rename); processes sharing the
folder compute each basis once (the others wait on its lock file, then load it).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
import xxhash
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import _io
from ._io import default_cache_dir
from .projection import DominantBasis, check_tau, dominant_rank

FORMAT_VERSION = "1"
log = logging.getLogger(__name__)


class StaleCacheWarning(UserWarning):
    """A cache file was unreadable or did not match; it was ignored and recomputed."""


def weight_fingerprint(weight: torch.Tensor) -> str:
    """128-bit XXH3 digest of a tensor's dtype, shape and exact values.

    An identity check, not a defence against forged files: XXH3 hashes tens of GB/s where BLAKE2b
    hashed under 1, and the hash was most of a basis load from the disk cache."""
    t = weight.detach().contiguous().cpu()
    h = xxhash.xxh3_128()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(memoryview(t.view(torch.uint8).numpy()))  # hashed in place, no copy of the values
    return h.hexdigest()


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The JSON header's ``__metadata__`` of a safetensors file (raises ValueError if unreadable)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file is shorter than a safetensors header")
        n = int.from_bytes(raw, "little")
        if n <= 0 or n > 100_000_000:
            raise ValueError("implausible safetensors header length")
        header = f.read(n)
        if len(header) != n:
            raise ValueError("truncated safetensors header")
    try:
        return json.loads(header).get("__metadata__") or {}
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt safetensors header: {e}") from None


def _file_id(path: Path) -> tuple | None:
    """Identity of the file now at ``path`` (None when absent): tells a rewritten file from one already read."""
    try:
        st = path.stat()
    except OSError:  # absent, or a parent is not a folder
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class BasisCache:
    """Returns the :class:`DominantBasis` of a weight, from memory, from disk, or by SVD.

    ``root`` defaults to ``default_cache_dir()/bases``; ``root=False`` keeps it in memory only.
    """

    def __init__(self, root: str | os.PathLike | None | bool = None):
        if root is False:
            self.root = None
        else:
            self.root = Path(root) if root not in (None, True) else default_cache_dir() / "bases"
        self._memory: dict[tuple[str, float], DominantBasis] = {}
        self.computed = 0
        self.loaded = 0

    def path_for(self, fingerprint: str, tau: float) -> Path | None:
        if self.root is None:
            return None
        return self.root / f"{fingerprint}-tau{check_tau(tau):.6g}.safetensors"

    def get(self, weight: torch.Tensor, tau: float = 0.1, fingerprint: str | None = None) -> DominantBasis:
        """Basis of ``weight`` for ``tau``; computes and stores it on a miss."""
        tau = check_tau(tau)
        fp = fingerprint or weight_fingerprint(weight)
        key = (fp, tau)
        if key in self._memory:
            return self._memory[key].to(weight.device)
        path = self.path_for(fp, tau)
        seen = _file_id(path) if path is not None else None
        basis = self._load(path, weight, fp, tau) if seen is not None else None
        if basis is None and path is not None:
            basis = self._compute_locked(path, weight, fp, tau, seen)
        elif basis is None:
            basis = self._compute(weight, tau)
        else:
            self.loaded += 1
        self._memory[key] = basis
        return basis

    def _compute(self, weight: torch.Tensor, tau: float) -> DominantBasis:
        self.computed += 1
        return DominantBasis.from_weight(weight, tau)

    def _compute_locked(self, path: Path, weight: torch.Tensor, fp: str, tau: float, seen) -> DominantBasis:
        """SVD under ``path``'s lock, unless another process wrote the file since it was ``seen``; an
        unwritable folder is reported (StaleCacheWarning naming it) and the basis kept in memory."""
        try:
            with _io.file_lock(path, what="basis", hint=_io.CACHE_HINT):
                now = _file_id(path)
                basis = self._load(path, weight, fp, tau) if now is not None and now != seen else None
                if basis is not None:
                    self.loaded += 1
                    return basis
                basis = self._compute(weight, tau)
                self._store(path, basis, weight, fp)
                return basis
        except _io.CacheWriteError as e:
            warnings.warn(f"could not write basis cache: {e}", StaleCacheWarning, stacklevel=4)
            return self._compute(weight, tau)

    def _store(self, path: Path, basis: DominantBasis, weight: torch.Tensor, fp: str) -> None:
        meta = {
            "format": "revive-plugin/basis",
            "format_version": FORMAT_VERSION,
            "fingerprint": fp,
            "tau": repr(basis.tau),
            "k": str(basis.k),
            "shape": json.dumps(list(weight.shape)),
            "dtype": str(weight.dtype),
        }
        tensors = {"U": basis.U, "V": basis.V, "singular_values": basis.singular_values}
        try:
            _io.atomic_save_safetensors(tensors, path, meta, what="basis", hint=_io.CACHE_HINT)
        except OSError as e:
            warnings.warn(f"could not write basis cache {path}: {e}", StaleCacheWarning, stacklevel=4)

    def _load(self, path: Path, weight: torch.Tensor, fp: str, tau: float) -> DominantBasis | None:
        try:
            meta = read_safetensors_metadata(path)
            problem = self._check_meta(meta, weight, fp, tau)
            if problem is None:
                t = load_file(str(path))
                problem = self._check_tensors(t, meta)
        except (OSError, ValueError, SafetensorError, RuntimeError) as e:
            problem = f"unreadable ({e})"
        if problem is not None:
            warnings.warn(
                f"ignoring basis cache file {path}: {problem}; recomputing", StaleCacheWarning, stacklevel=3
            )
            return None
        device = weight.device
        return DominantBasis(
            U=t["U"].to(device), V=t["V"].to(device), singular_values=t["singular_values"].to(device),
            k=int(meta["k"]), tau=tau,
        )

    @staticmethod
    def _check_meta(meta: dict, weight: torch.Tensor, fp: str, tau: float) -> str | None:
        if meta.get("format_version") != FORMAT_VERSION:
            return f"format version {meta.get('format_version')!r}, expected {FORMAT_VERSION!r}"
        if meta.get("fingerprint") != fp:
            return "fingerprint does not match the weight"
        try:
            if float(meta["tau"]) != tau:
                return f"tau {meta['tau']} != {tau}"
            shape = json.loads(meta["shape"])
            int(meta["k"])
        except (KeyError, ValueError, TypeError) as e:
            return f"incomplete metadata ({e})"
        if shape != list(weight.shape) or meta.get("dtype") != str(weight.dtype):
            return "shape or dtype does not match the weight"
        return None

    @staticmethod
    def _check_tensors(t: dict[str, torch.Tensor], meta: dict) -> str | None:
        if set(t) != {"U", "V", "singular_values"}:
            return f"unexpected tensors {sorted(t)}"
        m, n = json.loads(meta["shape"])
        k = int(meta["k"])
        U, V, S = t["U"], t["V"], t["singular_values"]
        if U.shape != (m, k) or V.shape != (n, k) or S.shape != (min(m, n),):
            return "tensor shapes do not match the header"
        if not all(torch.isfinite(x).all() for x in (U, V, S)):
            return "tensors contain NaN or Inf"
        if dominant_rank(S, float(meta["tau"])) != k:
            return "k does not follow from the stored singular values"
        eye = torch.eye(k, dtype=U.dtype)
        tol = 1e-3 if U.dtype == torch.float32 else 1e-8
        if (U.T @ U - eye).abs().max() > tol or (V.T @ V - eye).abs().max() > tol:
            return "stored singular vectors are not orthonormal"
        return None
