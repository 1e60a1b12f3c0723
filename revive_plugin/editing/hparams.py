"""Hyper-parameter dataclasses in EasyEdit's contract (``alg_name`` + ``from_hparams(yaml_path)``).

Every class reads EasyEdit's keys for its method plus ``use_revive`` / ``revive_tau`` (REVIVE, Eq. 5-6).
Keys are checked strictly: an unknown key, a missing required key or a value of the wrong type raises
:class:`HParamsError` (a ``ValueError``) naming the file and the key. Module templates left empty
(``None``) are filled from :mod:`revive_plugin.arch` when an editor is built.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Optional

import yaml

from ..config import check_tau


class HParamsError(ValueError):
    """A hyper-parameter file or value is invalid (names the file/key)."""


@dataclass
class EditHParams:
    """Keys shared by the locate-then-edit methods (EasyEdit MEMIT keys + REVIVE switches)."""

    alg_name: str = "MEMIT"
    model_name: str = "smollm2-135m"
    stats_dir: str = "./data/stats"
    device: Any = None
    layers: list[int] = field(default_factory=lambda: [4, 5, 6, 7, 8])
    clamp_norm_factor: float = 4.0
    layer_selection: str = "all"
    fact_token: str = "subject_last"
    v_num_grad_steps: int = 15
    v_lr: float = 0.5
    v_loss_layer: int = -1
    v_weight_decay: float = 1e-3
    kl_factor: float = 0.0625
    mom2_adjustment: bool = True
    mom2_update_weight: float = 1500.0
    rewrite_module_tmp: Optional[str] = None
    layer_module_tmp: Optional[str] = None
    mlp_module_tmp: Optional[str] = None
    attn_module_tmp: Optional[str] = None
    ln_f_module: Optional[str] = None
    lm_head_module: Optional[str] = None
    mom2_dataset: str = "wikipedia"
    mom2_n_samples: int = 3000
    mom2_dtype: str = "float32"
    model_parallel: bool = False
    max_length: int = 40
    batch_size: int = 1
    # Project-specific knobs (documented in docs/methods.md).
    stats_max_tokens: int = 128
    stats_batch_tokens: int = 4096
    context_prefixes: int = 5
    context_templates: str = "generated"
    use_revive: bool = False
    revive_tau: float = 0.1

    ALG_NAMES: ClassVar[tuple[str, ...]] = ("MEMIT",)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "<hparams>") -> None:
        """Type/range checks; raises :class:`HParamsError` naming ``source`` and the key."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, _coerce(value, hints[f.name], f.name, source))
        if self.alg_name not in self.ALG_NAMES:
            raise HParamsError(f"{source}: alg_name {self.alg_name!r} is not one of {self.ALG_NAMES}")
        if not self.layers or any(l < 0 for l in self.layers):
            raise HParamsError(f"{source}: key 'layers' must be a non-empty list of layer indices >= 0")
        if list(self.layers) != sorted(set(self.layers)):
            raise HParamsError(f"{source}: key 'layers' must be strictly increasing, got {self.layers}")
        try:
            self.revive_tau = check_tau(self.revive_tau)
        except ValueError as e:
            raise HParamsError(f"{source}: {e}") from None
        if self.fact_token not in ("subject_last", "subject_first", "last"):
            raise HParamsError(f"{source}: key 'fact_token' must be subject_last/subject_first/last")
        if self.mom2_dtype not in ("float32", "float64", "float16"):
            raise HParamsError(f"{source}: key 'mom2_dtype' must be float32/float64/float16")
        if not 0 <= self.context_prefixes <= 5:
            raise HParamsError(f"{source}: key 'context_prefixes' must be in 0..5")
        if self.context_templates not in ("generated", "fixed"):
            raise HParamsError(f"{source}: key 'context_templates' must be 'generated' or 'fixed', "
                               f"got {self.context_templates!r}")
        for key in ("v_num_grad_steps", "mom2_n_samples", "stats_max_tokens", "stats_batch_tokens"):
            if getattr(self, key) <= 0:
                raise HParamsError(f"{source}: key {key!r} must be > 0")
        for key in ("v_lr", "clamp_norm_factor", "mom2_update_weight"):
            if getattr(self, key) <= 0:
                raise HParamsError(f"{source}: key {key!r} must be > 0")

    @classmethod
    def from_hparams(cls, hparams_name_or_path: str | Path) -> "EditHParams":
        """Read a YAML file (``.yaml`` appended when missing) with ``yaml.safe_load``; strict keys."""
        path = Path(hparams_name_or_path)
        if path.suffix not in (".yaml", ".yml"):
            path = path.with_name(path.name + ".yaml")
        if not path.is_file():
            raise FileNotFoundError(f"hparams file not found: {path}")
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
        if not isinstance(config, dict):
            raise HParamsError(f"{path}: expected a mapping of keys, got {type(config).__name__}")
        return cls.from_dict(config, source=str(path))

    @classmethod
    def from_dict(cls, config: dict, source: str = "<dict>") -> "EditHParams":
        known = {f.name for f in fields(cls)}
        for key in config:
            if key not in known:
                raise HParamsError(f"{source}: unknown key {key!r} for {cls.__name__}")
        alg = config.get("alg_name", cls.ALG_NAMES[0])
        if alg not in cls.ALG_NAMES:
            raise HParamsError(f"{source}: alg_name {alg!r} does not match {cls.__name__} ({cls.ALG_NAMES})")
        obj = cls.__new__(cls)
        defaults = cls()
        for f in fields(cls):
            setattr(obj, f.name, config.get(f.name, getattr(defaults, f.name)))
        obj.validate(source)
        return obj

    def replace(self, **overrides) -> "EditHParams":
        """A copy with ``overrides`` applied (validated; unknown keys raise)."""
        data = self.to_dict()
        data.update(overrides)
        return type(self).from_dict(data, source="<overrides>")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _coerce(value, hint, key: str, source: str):
    """Check/convert ``value`` to the annotated type (ints to floats, '5e-1' strings to floats)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise HParamsError(f"{source}: key {key!r} must be a list, got {value!r}")
        return [_coerce(v, args[0], key, source) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise HParamsError(f"{source}: key {key!r} must be true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise HParamsError(f"{source}: key {key!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise HParamsError(f"{source}: key {key!r} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HParamsError(f"{source}: key {key!r} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise HParamsError(f"{source}: key {key!r} must be a string, got {value!r}")
        return value
    return value


@dataclass
class MEMITHyperParams(EditHParams):
    """MEMIT (Meng et al., 2023): ΔW = R Kᵀ (λC + KKᵀ)⁻¹."""

    ALG_NAMES: ClassVar[tuple[str, ...]] = ("MEMIT",)


@dataclass
class AlphaEditHyperParams(EditHParams):
    """AlphaEdit (Fang et al., 2025): null-space-constrained MEMIT with accumulated keys."""

    alg_name: str = "AlphaEdit"
    P_loc: Optional[str] = None
    nullspace_threshold: float = 2e-2
    L2: float = 10.0

    ALG_NAMES: ClassVar[tuple[str, ...]] = ("AlphaEdit",)

    def validate(self, source: str = "<hparams>") -> None:
        super().validate(source)
        if self.nullspace_threshold <= 0 or self.L2 < 0:
            raise HParamsError(f"{source}: keys 'nullspace_threshold' must be > 0 and 'L2' >= 0")


@dataclass
class RECTHyperParams(EditHParams):
    """RECT (Gu et al., 2024): MEMIT whose update keeps only the top fraction by |ΔW/W|."""

    alg_name: str = "RECT"
    rect_top_fraction: float = 0.4
    rect_epsilon: float = 1e-8
    rect_mode: str = "reference"

    ALG_NAMES: ClassVar[tuple[str, ...]] = ("RECT",)
    MODES: ClassVar[tuple[str, ...]] = ("reference", "per_layer")

    def validate(self, source: str = "<hparams>") -> None:
        super().validate(source)
        if not 0.0 < self.rect_top_fraction <= 1.0:
            raise HParamsError(f"{source}: key 'rect_top_fraction' must be in (0, 1]")
        if self.rect_mode not in self.MODES:
            raise HParamsError(f"{source}: key 'rect_mode' must be one of {list(self.MODES)}, got {self.rect_mode!r}")


@dataclass
class PRUNEHyperParams(EditHParams):
    """PRUNE (Ma et al., 2025): restrain large singular values of the accumulated update."""

    alg_name: str = "PRUNE"
    prune_log_base: float = 2.718281828459045
    prune_bound_scale: float = 1.0
    prune_timing: str = "reference"

    ALG_NAMES: ClassVar[tuple[str, ...]] = ("PRUNE",)
    TIMINGS: ClassVar[tuple[str, ...]] = ("reference", "per_round")

    def validate(self, source: str = "<hparams>") -> None:
        super().validate(source)
        if self.prune_timing not in self.TIMINGS:
            raise HParamsError(f"{source}: key 'prune_timing' must be one of {list(self.TIMINGS)}, "
                               f"got {self.prune_timing!r}")
        if self.prune_log_base <= 1.0:
            raise HParamsError(f"{source}: key 'prune_log_base' must be > 1")
        if self.prune_bound_scale <= 0:
            raise HParamsError(f"{source}: key 'prune_bound_scale' must be > 0")


@dataclass
class NSEHyperParams(EditHParams):
    """NSE (Jiang et al., 2025): neuron-level sequential editing."""

    alg_name: str = "NSE"
    alpha: float = 2.5
    upper_bound: float = 1e6
    max_iterations: int = 3
    neuron_threshold: float = 0.8

    ALG_NAMES: ClassVar[tuple[str, ...]] = ("NSE",)

    def validate(self, source: str = "<hparams>") -> None:
        super().validate(source)
        if not 0.0 < self.neuron_threshold <= 1.0:
            raise HParamsError(f"{source}: key 'neuron_threshold' must be in (0, 1]")
        if self.max_iterations < 2:
            raise HParamsError(f"{source}: key 'max_iterations' must be >= 2 (the last pass only checks)")
        if self.alpha < 0 or self.upper_bound <= self.alpha:
            raise HParamsError(f"{source}: keys 'alpha' >= 0 and 'upper_bound' > alpha required")


@dataclass
class DeltaEditHyperParams(EditHParams):
    """DeltaEdit (Cao et al., 2025): AlphaEdit's solve + a dynamic orthogonal constraint on the values.

    ``var``/``space`` keep the reference's key names; the reference's hard-coded constants are the
    ``noise_*`` keys and ``v_prob_stop`` (docs/methods.md)."""

    alg_name: str = "DeltaEdit"
    nullspace_threshold: float = 2e-2
    L2: float = 10.0
    var: float = 1.5
    space: float = 0.25
    noise_threshold: float = 0.1
    noise_momentum: float = 0.9
    noise_warmup: int = 20
    v_prob_stop: float = 0.98

    ALG_NAMES: ClassVar[tuple[str, ...]] = ("DeltaEdit",)

    def validate(self, source: str = "<hparams>") -> None:
        super().validate(source)
        checks = [
            ("nullspace_threshold", self.nullspace_threshold > 0, "> 0"), ("L2", self.L2 >= 0, ">= 0"),
            ("var", self.var >= 0, ">= 0"), ("space", 0 < self.space < 1, "in (0, 1)"),
            ("noise_threshold", self.noise_threshold >= 0, ">= 0"),
            ("noise_momentum", 0 <= self.noise_momentum < 1, "in [0, 1)"),
            ("noise_warmup", self.noise_warmup >= 0, ">= 0"), ("v_prob_stop", 0 < self.v_prob_stop <= 1, "in (0, 1]"),
        ]
        for key, ok, rule in checks:
            if not ok:
                raise HParamsError(f"{source}: key {key!r} must be {rule}, got {getattr(self, key)!r}")


__all__ = [
    "HParamsError",
    "EditHParams",
    "MEMITHyperParams",
    "AlphaEditHyperParams",
    "RECTHyperParams",
    "PRUNEHyperParams",
    "NSEHyperParams",
    "DeltaEditHyperParams",
]
