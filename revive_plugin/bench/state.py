"""Crash-safe run state: atomic JSON/safetensors writes and per-arm progress.

Every file is written to a temporary name in the same folder and moved into place with
``os.replace``, so a killed process leaves either the old or the new file, never half of one.
A round's state (edited weights + editor state) goes to a fresh ``state/round-NNNNN`` folder;
``progress.json`` is replaced last and names that folder, so it always points at a complete
state. Orphan folders from an interrupted save are removed on the next resume.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from revive_plugin import _io

PROGRESS_FILE = "progress.json"
PARAMS_FILE = "params.safetensors"
EDITOR_DIR = "editor"
REPR_REFERENCE_FILE = "repr_reference.safetensors"  # unedited hidden states (run folder)
REPR_FINAL_FILE = "repr_final.safetensors"          # an arm's hidden states at its last checkpoint


def atomic_write_text(path, text: str) -> None:
    _io.atomic_write_text(path, text, what="run state", fsync=True)


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_json(path):
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def save_tensors_atomic(path, tensors: dict) -> None:
    """Save a name->tensor dict as safetensors (CPU, contiguous), atomically."""
    _io.atomic_save_safetensors(tensors, path, what="run state")


def load_tensors(path) -> dict:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"state file missing: {path}")
    return load_file(str(path))


@dataclass
class ArmProgress:
    """What one arm (method x mode x tau) has completed; stored as ``progress.json``."""

    arm: str
    config_hash: str
    n_rounds: int
    rounds_done: int = 0
    edits_done: int = 0
    status: str = "running"          # running | done | stopped (drift alarm)
    state_dir: str | None = None     # relative to the arm folder
    rng: dict = field(default_factory=dict)
    edit_seconds: float = 0.0
    eval_seconds: float = 0.0
    round_seconds: list = field(default_factory=list)
    projection_seconds: list = field(default_factory=list)
    alarms: list = field(default_factory=list)

    def save(self, arm_dir) -> None:
        atomic_write_json(Path(arm_dir) / PROGRESS_FILE, asdict(self))

    @classmethod
    def load(cls, arm_dir) -> "ArmProgress | None":
        path = Path(arm_dir) / PROGRESS_FILE
        if not path.exists():
            return None
        data = read_json(path)
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def round_state_dir(arm_dir, rounds_done: int) -> Path:
    return Path(arm_dir) / "state" / f"round-{rounds_done:05d}"


def write_round_state(arm_dir, rounds_done: int, params: dict, editor, extra: dict) -> str:
    """Write a complete state folder for ``rounds_done``; returns its path relative to arm_dir."""
    target = round_state_dir(arm_dir, rounds_done)
    with _io.atomic_dir(target, what="run state") as tmp:
        save_tensors_atomic(tmp / PARAMS_FILE, params)
        editor.save(str(tmp / EDITOR_DIR))
        atomic_write_json(tmp / "extra.json", extra)
    return str(target.relative_to(arm_dir))


def prune_states(arm_dir, keep: str | None) -> None:
    """Remove every round folder except ``keep`` (orphans of interrupted saves included)."""
    root = Path(arm_dir) / "state"
    if not root.is_dir():
        return
    keep_path = (Path(arm_dir) / keep).resolve() if keep else None
    for child in root.iterdir():
        if keep_path is None or child.resolve() != keep_path:
            shutil.rmtree(child, ignore_errors=True)
