"""Subspace drift of edited weights against the originals (paper §2.3, Figs 4, 5, 12-14).

Sources of edited weights (never pickles):
  * a ``.safetensors`` file of edited parameters (``name -> tensor``);
  * a Hugging Face model folder (``model.safetensors`` or sharded ``*.safetensors``);
  * a benchmark arm folder (``progress.json`` naming ``state/round-NNNNN``) or one round folder
    (``params.safetensors``); any other folder: every ``*.safetensors`` file in it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from revive_plugin._util import key_matches
from revive_plugin.analysis.targets import Target
from revive_plugin.bench.state import PARAMS_FILE, PROGRESS_FILE
from revive_plugin.spectral import SpectralReference, check_fraction, spectral_details

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def _safetensors_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix in _PICKLE_SUFFIXES:
            raise ValueError(f"{path}: pickle-based checkpoints are not loaded; save edited weights as safetensors")
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: expected a .safetensors file")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"edited weights not found: {path}")
    progress = path / PROGRESS_FILE
    if progress.is_file():
        state_dir = json.loads(progress.read_text(encoding="utf-8")).get("state_dir")
        if not state_dir:
            raise ValueError(f"{progress} names no saved state yet")
        return _safetensors_files(path / state_dir)
    if (path / PARAMS_FILE).is_file():
        return [path / PARAMS_FILE]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        hint = f" (found pickle files {pickles[:3]}, which are not loaded)" if pickles else ""
        raise FileNotFoundError(f"no .safetensors files in {path}{hint}")
    return files


def _match(key: str, names: Sequence[str]) -> str | None:
    hits = key_matches(key, names)
    return hits[0] if len(hits) == 1 else None


def load_edited_weights(path, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Read the tensors of ``names`` (model parameter names) found under ``path``.

    Keys may carry an extra or missing prefix (``base_model.`` ...) if the match is unique.
    Only the requested tensors are read. Raises FileNotFoundError/ValueError with the path.
    """
    from safetensors import safe_open

    path = Path(path)
    found: dict[str, torch.Tensor] = {}
    for file in _safetensors_files(path):
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():
                name = _match(key, names)
                if name is not None and name not in found:
                    found[name] = fh.get_tensor(key)
    return found


def round_label(path, index: int) -> int:
    """Editing round parsed from ``round-NNNNN`` / ``round_10`` in the path, else ``index``."""
    hits = re.findall(r"round[-_]?(\d+)", str(path))
    if not hits and Path(path).is_dir() and (Path(path) / PROGRESS_FILE).is_file():
        state = json.loads((Path(path) / PROGRESS_FILE).read_text(encoding="utf-8")).get("state_dir") or ""
        hits = re.findall(r"round[-_]?(\d+)", state)
    return int(hits[-1]) if hits else index


def drift_report(originals: Mapping[str, torch.Tensor], checkpoints: Sequence[tuple[int, Mapping[str, torch.Tensor]]],
                 targets: Sequence[Target] | None = None, tau: float = 0.1, progress: bool = True) -> dict:
    """LS, SS (both sides) and norm growth of every checkpoint's matrices vs the originals.

    ``checkpoints``: ``(round, {name: edited tensor})`` in round order. Parameters missing from
    a checkpoint are skipped for it. Returns ``{"tau", "rounds", "params", "reports":
    {name: [{round, ls, ss_*, norm_growth, k_w0, k_wt, ss_right_max, ss_left_max}]}}`` and
    ``matrices`` (``{name: {round: {"right": k x r, "left": k x r}}}``, tensors, for plots).
    """
    tau = check_fraction(tau, "tau", allow_one=False)
    targets = list(targets) if targets is not None else [Target(n) for n in originals]
    for t in targets:
        if t.name not in originals:
            raise ValueError(f"no original weight for {t.name!r}")
    start = time.perf_counter()
    refs = {t.name: SpectralReference.from_weight(t.math_view(originals[t.name]), tau=tau) for t in targets}
    reports: dict[str, list] = {t.name: [] for t in targets}
    matrices: dict[str, dict] = {t.name: {} for t in targets}
    jobs = [(r, weights, t) for r, weights in checkpoints for t in targets if t.name in weights]
    for rnd, weights, t in tqdm(jobs, desc="spectral drift", disable=not progress):
        ref = refs[t.name]
        wt = weights[t.name]
        if tuple(t.math_view(wt).shape) != ref.shape:
            raise ValueError(f"{t.name} in round {rnd} has shape {tuple(wt.shape)}, original {tuple(originals[t.name].shape)}")
        details = spectral_details(ref, t.math_view(wt), tau)
        right, left = details.right, details.left
        reports[t.name].append({
            "round": rnd,
            **details.report,
            "ss_right_max": right.max.tolist(), "ss_left_max": left.max.tolist(),
        })
        matrices[t.name][rnd] = {"right": right.matrix, "left": left.matrix}
    return {
        "experiment": "drift",
        "tau": tau,
        "rounds": [r for r, _ in checkpoints],
        "params": [t.name for t in targets],
        "reports": reports,
        "matrices": matrices,
        "seconds": time.perf_counter() - start,
    }
