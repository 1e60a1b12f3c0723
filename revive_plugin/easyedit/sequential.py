"""A sequential editor on EasyEdit's ``BaseEditor``: what ``revive bench --host easyedit`` drives.

:mod:`revive_plugin.easyedit` is enabled first (EasyEdit's hparams classes accept ``use_revive`` /
``revive_tau``, its locate-then-edit ``ALG_DICT`` entries project ΔW off the original dominant subspace,
this project's RECT/PRUNE/NSE are registered under names the host lacks). The editor is then built as
EasyEdit users build it, ``BaseEditor.from_hparams(hparams)`` with ``model_name = (model, tok)`` (the
already-loaded model; EasyEdit loads nothing), and every round calls ``editor.apply_algo(model, tok,
requests, hparams, copy=False, ...)`` as ``BaseEditor.edit(..., sequential_edit=True)`` does: the weights
accumulate; EasyEdit's own evaluation is not run (the harness evaluates).

Hyper-parameters: for a method the host has (MEMIT, AlphaEdit) the HOST's class is built from the
project's resolved values (harness overrides and ``stats_dir`` included), keeping only the fields that
class declares; ``device`` comes from the model's parameters and ``model_name`` is the model's
``config._name_or_path``. For a method the project registered, the project's own hparams are used.
Covariance statistics are written beforehand, in EasyEdit's layout and at the path EasyEdit opens,
by :func:`revive_plugin.editing.covariance.ensure_stats`, so EasyEdit never downloads Wikipedia.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import logging
import sys
from pathlib import Path

import torch

from .._io import atomic_write_text
from .._util import model_device
from ..config import ReviveConfig
from ..editing.core import rewrite_of

log = logging.getLogger(__name__)

STATE_FILE = "easyedit-host.json"
#: Host methods whose whole sequential state is the edited weights (which the harness saves itself).
WEIGHTS_ONLY_STATE = ("ROME", "MEMIT", "EMMET", "R-ROME")
#: Project keys used on this host only to write the covariance statistics EasyEdit reads.
STATS_KEYS = ("stats_max_tokens", "stats_batch_tokens")
#: Seed for the context templates EasyEdit samples once per process (see ``_warm_context_templates``).
TEMPLATE_SEED = 0


def to_easyedit_request(rec: dict) -> dict:
    """A CounterFact record (or an EasyEdit request) as EasyEdit main's request dict.

    ``prompt`` keeps its ``{}`` subject slot (EasyEdit's locate-then-edit methods accept it as is and
    would otherwise replace the subject by ``{}`` themselves); ``target_new``/``ground_truth`` are plain
    strings (EasyEdit adds the leading space).
    """
    rw, true = rewrite_of(rec)

    def text(value, key):
        if isinstance(value, dict):
            value = value.get("str")
        if not isinstance(value, str) or (key == "target_new" and not value.strip()):
            raise ValueError(f"edit record {rec.get('case_id', '?')}: {key!r} must be a non-empty string, "
                             f"got {value!r}")
        return value

    prompt, subject = rw.get("prompt"), rw.get("subject")
    if not isinstance(prompt, str) or not isinstance(subject, str) or ("{}" not in prompt and subject not in prompt):
        raise ValueError(f"edit record {rec.get('case_id', '?')}: needs a 'prompt' with '{{}}' or the subject, "
                         f"and a 'subject'; got {prompt!r}, {subject!r}")
    return {"case_id": rec.get("case_id", rw.get("case_id")), "prompt": prompt, "subject": subject,
            "target_new": text(rw.get("target_new"), "target_new"),
            "ground_truth": text(true, "ground_truth") if true is not None else "<|endoftext|>"}


def easyedit_model_name(model) -> str:
    """``model.config._name_or_path``: EasyEdit names the stats folder after its last component."""
    return str(getattr(model.config, "_name_or_path", "") or "")


def _stats_model_dir(stats_dir, model) -> Path:
    """``<stats_dir>/<last component of _name_or_path>``: the folder EasyEdit main's ``layer_stats`` reads."""
    name = easyedit_model_name(model)
    if not name or name.endswith("/"):
        raise ValueError("--host easyedit: model.config._name_or_path is empty or ends in '/'; EasyEdit names "
                         "its covariance folder after it")
    from revive_plugin.editing.covariance import stats_model_dir

    return Path(stats_dir) / stats_model_dir(name)


def easyedit_hparams(host_cls: type, project_hp, model):
    """The host's hparams object (``host_cls``, a dataclass) from the project's resolved hparams.

    Keeps the fields ``host_cls`` declares (others are dropped and returned), fills module templates the
    project left empty from :mod:`revive_plugin.arch`, turns a negative ``v_loss_layer`` into a layer
    index, takes ``device`` from the model's parameters and ``model_name`` from its config, and carries
    ``use_revive``/``revive_tau``. Returns ``(hparams, dropped_keys)``; a ValueError names the fields the
    host class requires and the project's values do not give.
    """
    if not dataclasses.is_dataclass(host_cls):
        raise TypeError(f"{host_cls!r} is not a dataclass hparams class")
    values = project_hp.to_dict() if hasattr(project_hp, "to_dict") else dict(vars(project_hp))
    cfg = ReviveConfig.of(project_hp)
    values.pop("use_revive", None)
    values.pop("revive_tau", None)
    revive = {"use_revive": cfg.enabled, "revive_tau": cfg.tau}
    values["device"] = str(model_device(model))  # a string, as EasyEdit's normalize_device wants
    values["model_name"] = easyedit_model_name(model) or values.get("model_name")
    from revive_plugin.arch import arch_for, num_layers

    for key, value in list(values.items()):
        if key.endswith(("_module_tmp", "_module")) and value is None:
            with contextlib.suppress(ValueError):
                values[key] = getattr(arch_for(model), key)
    if isinstance(values.get("v_loss_layer"), int) and values["v_loss_layer"] < 0:
        values["v_loss_layer"] += num_layers(model)
    declared = {f.name: f for f in dataclasses.fields(host_cls)}
    kwargs = {k: v for k, v in values.items() if k in declared and v is not None}
    missing = [name for name, f in declared.items() if name not in kwargs and name not in revive
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        null = [k for k in missing if k in values]
        absent = [k for k in missing if k not in values]
        why = ([f"{', '.join(null)} (null: set in the method's YAML or with --set KEY=VALUE)"] if null else []) + \
              ([f"{', '.join(absent)} (not a key of this project's hparams)"] if absent else [])
        raise ValueError(f"--host easyedit: EasyEdit's {host_cls.__name__} requires fields that the project's "
                         f"hparams for {values.get('alg_name', '?')} do not give: {'; '.join(why)}")
    kwargs.update({k: v for k, v in revive.items() if k in declared})
    hp = host_cls(**kwargs)
    for key, value in revive.items():  # without declared fields: the attributes revive_plugin.easyedit reads
        setattr(hp, key, value)
    return hp, sorted(k for k in values if k not in declared)


@contextlib.contextmanager
def _padding_side(tok, side: str):
    old = getattr(tok, "padding_side", None)
    tok.padding_side = side
    try:
        yield
    finally:
        tok.padding_side = old


class EasyEditSequentialEditor:
    """Editor protocol (edit / edited_params / save / load) on top of EasyEdit's BaseEditor."""

    def __init__(self, method: str, model, tok, hparams):
        from revive_plugin import easyedit as bridge

        host = bridge.enable()
        base_editor = host.package.BaseEditor
        self.method, self.model, self.tok = method, model, tok
        self.native = method in bridge.PLUGIN.registered()  # this project's method, registered in ALG_DICT
        self.dropped: list[str] = []
        if self.native:
            hp = copy.copy(hparams)
            hp.device = str(model_device(model))  # BaseEditor moves the model to hparams.device
        else:
            host_cls = getattr(host.package, f"{hparams.alg_name}HyperParams", None)
            if host_cls is None or not issubclass(host_cls, host.hparams_base):
                raise ValueError(f"--host easyedit: the EasyEdit at {host.location} has no "
                                 f"{hparams.alg_name}HyperParams for method {method}")
            if hparams.alg_name == "AlphaEdit":  # P is computed by this run (never a pickle from elsewhere)
                hparams = copy.copy(hparams)
                hparams.P_loc = "(computed by this run)"  # filled in _prepare_alphaedit
            hp, self.dropped = easyedit_hparams(host_cls, hparams, model)
            unused = [k for k in self.dropped if k not in STATS_KEYS]
            if unused:
                log.info("--host easyedit: EasyEdit's %s has no %s (ignored)", host_cls.__name__, ", ".join(unused))
        self.hparams, self.project_hparams = hp, hparams
        name, hp.model_name = hp.model_name, (model, tok)  # BaseEditor takes a loaded (model, tok) pair
        try:
            self.editor = base_editor.from_hparams(hp)
        finally:
            hp.model_name = name
        fn = self.editor.apply_algo
        self._host_fn = getattr(fn, "__revive_original__", fn)
        self._host_module = sys.modules.get(getattr(self._host_fn, "__module__", ""), None)
        self.rounds = 0
        self._first_call = True
        from revive_plugin.easyedit import edited_param_names

        self._edited = edited_param_names(model, hp)
        if self.native:
            from revive_plugin.editing.state import reset_state

            reset_state(model, method)  # a fresh sequence (the previous arm's state is attached to the model)
        else:
            self._prepare_host()
        # The harness builds the editor on the ORIGINAL weights (also when resuming): REVIVE's bases come
        # from them, not from whatever the model holds at its first REVIVE edit.
        bridge.forget(model)
        if ReviveConfig.of(hp).enabled:
            bridge.set_original_weights(model, {n: model.get_parameter(n).detach().clone() for n in self._edited})

    # ------------------------------------------------------------------ host set-up
    def _prepare_host(self) -> None:
        hp = self.hparams
        if hasattr(hp, "mom2_n_samples") and hasattr(hp, "stats_dir"):
            self._ensure_stats()
        if hp.alg_name == "AlphaEdit":
            self._prepare_alphaedit()
        self._warm_context_templates()

    def _ensure_stats(self) -> None:
        from revive_plugin.editing.covariance import ensure_stats

        hp, own = self.hparams, self.project_hparams
        ensure_stats(self.model, self.tok, [hp.rewrite_module_tmp.format(l) for l in hp.layers], hp.stats_dir,
                     model_name=_stats_model_dir(hp.stats_dir, self.model).name, mom2_dataset=hp.mom2_dataset,
                     n_samples=hp.mom2_n_samples, dtype=hp.mom2_dtype, progress=False,
                     max_tokens=getattr(own, "stats_max_tokens", 128),
                     batch_tokens=getattr(own, "stats_batch_tokens", 4096))

    def _prepare_alphaedit(self) -> None:
        """EasyEdit main's AlphaEdit keeps its projector P in module globals: compute P once for this run
        (the plugin's ``P_loc: null`` handling, with the host's own ``get_project``) and make the host load it."""
        hp = self.hparams
        if not any(s in str(hp.model_name).lower() for s in ("llama", "qwen", "gpt2-xl")):
            raise ValueError(
                f"--host easyedit: EasyEdit main's AlphaEdit picks its matrix shapes from the model name and knows "
                f"only names containing llama, qwen or gpt2-xl; got {hp.model_name!r} (load the model from a folder "
                "so named, e.g. by `revive model export`, or use --host native)")
        from revive_plugin import easyedit as bridge

        hp.P_loc = None
        bridge.PLUGIN.adapter.fill_p_loc(self._host_fn, self.model, self.tok, hp)

    def _warm_context_templates(self) -> None:
        """EasyEdit samples its context templates from the model at its first call in a process and keeps
        them in a module global: take them now, from the original weights with a fixed seed, so that a
        resumed run (new process, edited weights) uses the same templates."""
        fn = getattr(self._host_module, "get_context_templates", None)
        if fn is None or getattr(self._host_module, "CONTEXT_TEMPLATES_CACHE", 0) is not None \
                or len(inspect.signature(fn).parameters) != 2:
            return
        with torch.random.fork_rng(), _padding_side(self.tok, "right"):
            torch.manual_seed(TEMPLATE_SEED)
            fn(self.model, self.tok)

    # ------------------------------------------------------------------ editor protocol
    @property
    def edited_params(self) -> list[str]:
        return list(self._edited)

    def edit(self, requests: list[dict]) -> dict:
        reqs = [to_easyedit_request(r) for r in requests]
        kwargs = {}
        if self._first_call and "reset_cache" in inspect.signature(self._host_fn).parameters:
            kwargs["reset_cache"] = True  # AlphaEdit: start a new sequence (its accumulated keys are global)
        # EasyEdit's locate-then-edit code indexes targets from the left: BaseEditor pads those methods on the right
        pad = contextlib.nullcontext() if self.native else _padding_side(self.tok, "right")
        with pad:
            edited, _ = self.editor.apply_algo(self.model, self.tok, reqs, self.hparams, copy=False,
                                               return_orig_weights=True, keep_original_weight=False,
                                               train_ds=None, **kwargs)
        if edited is not self.model:
            raise RuntimeError(f"EasyEdit's {self.hparams.alg_name} returned a new model although copy=False")
        self.editor.model = edited  # what BaseEditor does with sequential_edit=True
        self._first_call = False
        self.rounds += 1
        return {"n_requests": len(reqs), "host": "easyedit", "alg_name": self.hparams.alg_name}

    def save(self, directory) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.native:
            from revive_plugin.editing.state import attached_state

            attached_state(self.model, self.method).save(d / "state")
        info = {"method": self.method, "alg_name": self.hparams.alg_name, "rounds": self.rounds,
                "native": self.native}
        atomic_write_text(d / STATE_FILE, json.dumps(info, indent=2), what="edit state")

    def load(self, directory) -> None:
        d = Path(directory)
        if not self.native and self.hparams.alg_name not in WEIGHTS_ONLY_STATE:
            raise ValueError(
                f"resuming a --host easyedit run is not supported for {self.method}: EasyEdit keeps its "
                "sequential state (e.g. AlphaEdit's projector and accumulated keys) in module globals; "
                "start a new run or use --host native")
        if not (d / STATE_FILE).is_file():
            raise FileNotFoundError(f"{d} has no {STATE_FILE}: not a --host easyedit editor state")
        info = json.loads((d / STATE_FILE).read_text(encoding="utf-8"))
        if info.get("method") != self.method:
            raise ValueError(f"{d}: state of method {info.get('method')!r}, expected {self.method!r}")
        if self.native:
            from revive_plugin.editing.state import EditState, attach_state

            attach_state(self.model, EditState.load(d / "state", device=model_device(self.model)))
        self.rounds = int(info.get("rounds", 0))
        self._first_call = False
