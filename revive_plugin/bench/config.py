"""Benchmark configuration: presets, validation and the run's config hash.

One :class:`BenchConfig` describes a whole sequential-editing experiment (paper §4: N edits
in rounds of B, methods x {plain, +REVIVE}, checkpoints every R rounds). Everything that can
change the numbers goes into :meth:`BenchConfig.hash_payload`; a run folder is bound to that
hash and ``--resume`` refuses a folder made from another configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..config import check_tau
from ..editing import METHODS

ALL_METHODS = tuple(METHODS)  #: every registered editing method, in registry order
HOSTS = ("native", "easyedit")
GENERATION_MODES = ("none", "final", "checkpoints")
ALARM_ACTIONS = ("warn", "stop")
DATA_FORMATS = ("auto", "counterfact", "zsre")
ZSRE_TARGETS = ("answers", "alt")
GENERATION_PROTOCOLS = ("memit", "fast")

# Fields that never change results: excluded from the hash (device/paths may differ on resume).
_RUNTIME_FIELDS = ("device", "save_every", "preset", "glue_dir", "hparams_dir", "quiet", "only_arms")


@dataclass
class BenchConfig:
    """Resolved settings of one benchmark run (see ``revive bench --help`` for each flag)."""

    preset: str = "default"
    methods: list = field(default_factory=lambda: ["MEMIT"])
    model: str = "smollm2-135m"
    dtype: str | None = "float32"
    device: str | None = None
    data: str | None = None
    data_format: str = "auto"
    zsre_target: str = "answers"
    n_edits: int = 100
    batch_size: int = 25
    eval_every: int = 1
    seed: int = 0
    taus: list = field(default_factory=lambda: [0.1])
    plain: bool = True
    host: str = "native"
    hparams_dir: str | None = None
    hparams_overrides: dict = field(default_factory=dict)
    eval_max_edits: int | None = None
    n_paraphrase: int | None = None
    n_neighborhood: int | None = None
    eval_batch_size: int = 32
    generation: str = "final"
    n_generation: int = 50
    generation_protocol: str = "memit"
    glue_dir: str | None = None
    glue_tasks: list = field(default_factory=lambda: ["sst2", "mrpc", "rte", "cola"])
    glue_n: int = 50
    glue_shots: int = 2
    ppl_texts: int = 64
    ppl_max_length: int = 128
    probe_n: int = 100
    repr_n: int = 1000
    spectral_tau: float = 0.1
    alarm_ls: float | None = None
    alarm_ss: float | None = None
    alarm_action: str = "warn"
    save_every: int = 1
    quiet: bool = False
    only_arms: list | None = None  # this process runs only these arms (by folder name); None: all

    # ---- derived ----
    @property
    def n_rounds(self) -> int:
        return math.ceil(self.n_edits / self.batch_size)

    def checkpoint_rounds(self) -> list[int]:
        """Rounds (1-based) after which everything is evaluated: every R rounds and the last."""
        rounds = list(range(self.eval_every, self.n_rounds + 1, self.eval_every))
        if not rounds or rounds[-1] != self.n_rounds:
            rounds.append(self.n_rounds)
        return rounds

    def round_slice(self, r: int) -> slice:
        """Indices of the records edited in 0-based round ``r``."""
        return slice(r * self.batch_size, min((r + 1) * self.batch_size, self.n_edits))

    # ---- (de)serialisation ----
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown benchmark config keys: {unknown}")
        return cls(**d)

    def hash_payload(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in _RUNTIME_FIELDS}

    def validate(self) -> "BenchConfig":
        """Check ranges and names; raises ValueError naming the offending setting."""
        if not self.methods:
            raise ValueError("methods: at least one editing method is needed")
        canon = {m.lower(): m for m in METHODS}  # the registry as it is now: a method registered later counts
        fixed = []
        for m in self.methods:
            if not isinstance(m, str) or m.lower() not in canon:
                raise ValueError(f"unknown method {m!r}; choose from {list(METHODS)} (or 'all')")
            fixed.append(canon[m.lower()])
        if len(set(fixed)) != len(fixed):
            raise ValueError(f"methods: duplicate entries in {self.methods}")
        self.methods = fixed
        for name in ("n_edits", "batch_size", "eval_every", "eval_batch_size", "save_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.batch_size > self.n_edits:
            raise ValueError(f"batch_size B={self.batch_size} is larger than the number of edits N={self.n_edits}")
        for name in ("eval_max_edits", "n_paraphrase", "n_neighborhood"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, got {v!r}")
        for name in ("n_generation", "glue_n", "glue_shots", "ppl_texts", "probe_n", "repr_n", "ppl_max_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if not self.taus:
            raise ValueError("taus: give at least one REVIVE energy threshold")
        self.taus = [check_tau(t) for t in self.taus]
        if len(set(self.taus)) != len(self.taus):
            raise ValueError(f"taus: duplicate values in {self.taus}")
        self.spectral_tau = check_fraction(self.spectral_tau, "spectral_tau")
        for name in ("alarm_ls", "alarm_ss"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, check_fraction(v, name, allow_one=True))
        if self.host not in HOSTS:
            raise ValueError(f"host must be one of {list(HOSTS)}, got {self.host!r}")
        if self.generation not in GENERATION_MODES:
            raise ValueError(f"generation must be one of {list(GENERATION_MODES)}, got {self.generation!r}")
        if self.alarm_action not in ALARM_ACTIONS:
            raise ValueError(f"alarm_action must be one of {list(ALARM_ACTIONS)}, got {self.alarm_action!r}")
        if self.data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be one of {list(DATA_FORMATS)}, got {self.data_format!r}")
        if self.zsre_target not in ZSRE_TARGETS:
            raise ValueError(f"zsre_target must be one of {list(ZSRE_TARGETS)}, got {self.zsre_target!r}")
        if self.generation_protocol not in GENERATION_PROTOCOLS:
            raise ValueError(f"generation_protocol must be one of {list(GENERATION_PROTOCOLS)}, "
                             f"got {self.generation_protocol!r}")
        if not isinstance(self.hparams_overrides, dict):
            raise TypeError("hparams_overrides must be a dict of hparams keys to values")
        if self.only_arms is not None and (not isinstance(self.only_arms, list) or not self.only_arms):
            raise ValueError("only_arms must be a non-empty list of arm names (or None for every arm)")
        if not isinstance(self.glue_tasks, list):
            raise TypeError("glue_tasks must be a list of task names")
        return self


def check_fraction(value: Any, name: str, allow_one: bool = False) -> float:
    """A float in (0, 1) (or (0, 1]); ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    v = float(value)
    if not (0.0 < v < 1.0 or (allow_one and v == 1.0)):
        raise ValueError(f"{name} must be in (0, 1{']' if allow_one else ')'}, got {v}")
    return v


# Presets: the README's default job (CPU, minutes), a longer CPU run, the paper's setting (GPU)
# and a smoke run for CI. Flags override single values.
#: CPU-sized editing settings shared by the CPU presets (fewer optimisation steps and context prefixes,
#: a smaller covariance sample than the YAMLs' GPU-sized defaults; one covariance file serves both).
CPU_HPARAMS = dict(v_num_grad_steps=10, context_prefixes=1, mom2_n_samples=1000, stats_max_tokens=64)
#: The CPU presets leave GLUE out (glue_n=0): on the bundled SmolLM2-135M no GLUE-style task, raw or calibrated,
#: is both above chance and falling under damage of the edited matrices, while held-out PPL, the knowledge probe
#: and representation drift are (benchmarks/bench_general_measures.py; docs/benchmark.md). --glue-n turns it on.

PRESETS: dict[str, dict] = {
    "default": dict(methods=["MEMIT"], n_edits=150, batch_size=50, eval_every=2,
                    eval_max_edits=100, n_paraphrase=1, n_neighborhood=2, generation="final",
                    n_generation=10, glue_n=0, ppl_texts=32, probe_n=50, hparams_overrides=dict(CPU_HPARAMS)),
    "long": dict(methods=["MEMIT"], n_edits=1000, batch_size=50, eval_every=4,
                 eval_max_edits=200, n_paraphrase=1, n_neighborhood=2, generation="final",
                 n_generation=20, glue_n=0, ppl_texts=64, probe_n=100, hparams_overrides=dict(CPU_HPARAMS)),
    "scale": dict(methods=["MEMIT"], n_edits=5000, batch_size=100, eval_every=10,
                  eval_max_edits=500, n_paraphrase=1, n_neighborhood=2, generation="final",
                  n_generation=50, glue_n=0, ppl_texts=64, probe_n=100, repr_n=1000,
                  hparams_overrides=dict(CPU_HPARAMS)),
    "paper": dict(methods=list(ALL_METHODS), n_edits=10000, batch_size=100, eval_every=10,
                  eval_max_edits=None, n_paraphrase=None, n_neighborhood=None, generation="final",
                  n_generation=200, glue_n=200, ppl_texts=256, probe_n=500),
    "smoke": dict(methods=["MEMIT"], n_edits=4, batch_size=2, eval_every=1, n_paraphrase=1,
                  n_neighborhood=1, generation="final", n_generation=2, generation_protocol="fast", glue_n=4,
                  ppl_texts=4, probe_n=4, repr_n=8, glue_tasks=["sst2"]),
}


def preset_config(name: str, **overrides) -> BenchConfig:
    """A validated config from preset ``name`` with single values overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    values = dict(PRESETS[name])
    hp = {**values.get("hparams_overrides", {}), **(overrides.pop("hparams_overrides", None) or {})}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["hparams_overrides"] = hp
    values["preset"] = name
    return BenchConfig.from_dict(values).validate()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(cfg: BenchConfig, hparams: dict, data_fingerprint: str) -> str:
    """sha256 over the result-relevant settings, the resolved hparams and the data's fingerprint."""
    payload = {"config": cfg.hash_payload(), "hparams": hparams, "data": data_fingerprint}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()[:16]


def records_fingerprint(records: list) -> str:
    """Content hash of the edit records (so a changed fact file is noticed on resume)."""
    return hashlib.sha256(_canonical(records).encode()).hexdigest()[:16]


def config_diff(a: dict, b: dict) -> list[str]:
    """Keys whose values differ between two hash payloads, for error messages."""
    keys = sorted(set(a) | set(b))
    return [k for k in keys if _canonical(a.get(k)) != _canonical(b.get(k))]
