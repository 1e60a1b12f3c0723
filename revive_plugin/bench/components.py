"""Adapters from the benchmark harness to this project's model, data, editing and evaluation
modules. The harness only calls the methods of :class:`ProjectComponents`; tests pass small
fakes with the same methods. Heavy imports (transformers, EasyEdit) happen inside methods."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from revive_plugin._util import get_parameter
from revive_plugin.cache import default_cache_dir

from .config import BenchConfig


PROBE_POOL_FACTOR = 20
log = logging.getLogger(__name__)


def _json_safe(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (str, int, float, bool)) or x is None else str(x) for x in v]
        elif isinstance(v, dict):
            out[k] = _json_safe(v)
        else:
            out[k] = str(v)
    return out


_EDIT_KEYS = {
    "efficacy": ("efficacy", "efficacy_success", "rewrite_acc", "es"),
    "paraphrase": ("paraphrase", "paraphrase_success", "rephrase_acc", "ps"),
    "neighborhood": ("neighborhood", "neighborhood_success", "locality", "ns"),
    "fluency": ("fluency", "ngram_entropy"),
    "consistency": ("consistency", "reference_score"),
}


def normalize_edit_metrics(raw: dict) -> dict:
    """Map an evaluator's dict to efficacy/paraphrase/neighborhood/fluency/consistency (+ extras)."""
    out = {}
    lower = {str(k).lower(): v for k, v in raw.items()}
    for name, aliases in _EDIT_KEYS.items():
        for a in aliases:
            if a in lower and isinstance(lower[a], (int, float)) and not isinstance(lower[a], bool):
                out[name] = float(lower[a])
                break
    for k, v in raw.items():
        if k not in out and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


class GeneralEvaluator:
    """General ability (Fig 3b/7): GLUE-style accuracy, held-out perplexity and a knowledge probe.

    Built once on the unedited model: the probe keeps facts (true objects of records that are
    never edited in this run) that this model answers exactly; it is stored in ``state_path``
    so a resumed run scores the same facts.
    """

    def __init__(self, cfg: BenchConfig, model, tok, probe_records=(), state_path=None):
        from revive_plugin.data.corpus import wiki_texts
        from revive_plugin.evaluation.general import KnowledgeProbe, probe_candidates, resolve_glue_dir

        from .state import atomic_write_json, read_json

        self.cfg = cfg
        self.glue_dir = None
        if cfg.glue_n > 0 and cfg.glue_tasks:
            self.glue_dir, note = resolve_glue_dir(cfg.glue_dir, tuple(cfg.glue_tasks))
            if self.glue_dir is None:
                log.warning(note)
        self.texts = wiki_texts("heldout", n=cfg.ppl_texts) if cfg.ppl_texts > 0 else []
        self.probe = None
        if cfg.probe_n > 0:
            path = Path(state_path) if state_path is not None else None
            if path is not None and path.is_file():
                self.probe = KnowledgeProbe.from_dict(read_json(path)["probe"])
            else:
                # a model knows only some facts: scan a bounded pool (all of it for tiny random models is slow)
                cands = probe_candidates(list(probe_records)[: PROBE_POOL_FACTOR * cfg.probe_n])
                self.probe = KnowledgeProbe.build(model, tok, cands, max_facts=cfg.probe_n,
                                                  batch_size=cfg.eval_batch_size, progress=False)
                if path is not None:
                    atomic_write_json(path, {"probe": self.probe.to_dict()})
        self.repr_prompts = [c["prompt"] for c in probe_candidates(list(probe_records)[: cfg.repr_n])]
        self.repr_reference = self._repr_reference(model, tok, state_path) if len(self.repr_prompts) > 1 else None
        self.last_repr_states = None

    def _repr_reference(self, model, tok, state_path):
        """Unedited hidden states of the never-edited prompts, kept beside ``state_path`` so that a
        resumed run compares against the same reference."""
        from revive_plugin.evaluation.representation import prompt_states

        from .state import REPR_REFERENCE_FILE, load_tensors, save_tensors_atomic

        path = Path(state_path).with_name(REPR_REFERENCE_FILE) if state_path is not None else None
        if path is not None and path.is_file():
            return load_tensors(path)["states"]
        states = prompt_states(model, tok, self.repr_prompts, batch_size=self.cfg.eval_batch_size)
        if path is not None:
            save_tensors_atomic(path, {"states": states})
        return states

    @torch.no_grad()
    def evaluate(self, model, tok) -> dict:
        from revive_plugin.evaluation import general

        out = {}
        if self.glue_dir is not None and self.cfg.glue_n > 0 and self.cfg.glue_tasks:
            acc = general.glue_accuracy(model, tok, self.glue_dir, tasks=tuple(self.cfg.glue_tasks),
                                        n_per_task=self.cfg.glue_n, shots=self.cfg.glue_shots,
                                        seed=self.cfg.seed, batch_size=self.cfg.eval_batch_size, progress=False)
            out.update({f"glue_{t}": float(acc[t]) for t in self.cfg.glue_tasks})
            out["glue_avg"] = float(acc["mean"])
        if self.texts:
            out["ppl"] = float(general.perplexity(model, tok, self.texts, batch_size=self.cfg.eval_batch_size,
                                                  max_length=self.cfg.ppl_max_length, progress=False))
        if self.probe is not None and len(self.probe):
            out["probe"] = float(self.probe.score(model, tok, batch_size=self.cfg.eval_batch_size, progress=False))
        if self.repr_reference is not None:
            from revive_plugin.evaluation.representation import drift_metrics, prompt_states

            self.last_repr_states = prompt_states(model, tok, self.repr_prompts, batch_size=self.cfg.eval_batch_size)
            out.update(drift_metrics(self.repr_reference, self.last_repr_states))
        return out


class ProjectComponents:
    """The real thing: bundled/HF models, the offline fact set or CounterFact/ZsRE files,
    this project's editors (or EasyEdit's BaseEditor with ``host="easyedit"``)."""

    def check(self, cfg: BenchConfig) -> None:
        """Fail early (before the run folder is touched) when the chosen host is unusable."""
        if cfg.host == "easyedit":
            try:
                import revive_plugin.easyedit.sequential  # noqa: F401  (enables the plugin: imports easyeditor)
            except Exception as exc:  # EasyEdit's import pulls many optional packages
                raise ValueError(
                    f"--host easyedit needs EasyEdit importable, but 'import easyeditor' failed "
                    f"({type(exc).__name__}: {exc}); install EasyEdit with its dependencies or use --host native"
                ) from None

    def known_methods(self) -> list[str]:
        from revive_plugin.editing import METHODS

        return list(METHODS)

    def load_records(self, cfg: BenchConfig) -> list[dict]:
        from revive_plugin.data import counterfact, facts

        if cfg.data is None:
            return facts.load_facts()
        path = Path(cfg.data)
        if not path.is_file():
            raise FileNotFoundError(f"data file not found or unreadable: {path}")
        if not os.access(path, os.R_OK):
            raise FileNotFoundError(f"data file is not readable: {path}")
        fmt = cfg.data_format
        if fmt == "auto":
            fmt = "zsre" if "zsre" in path.name.lower() else "counterfact"
        if fmt == "zsre":
            return counterfact.zsre_to_requests(counterfact.load_zsre(path), target=cfg.zsre_target)
        return counterfact.load_counterfact(path)

    def _hparams(self, cfg: BenchConfig, method: str, revive_tau=None):
        from revive_plugin.editing import load_hparams

        model_key = Path(cfg.model).name if os.path.sep in cfg.model else cfg.model
        over = {"stats_dir": str(default_cache_dir() / "stats")}  # not the YAML's folder relative to the cwd
        over.update(cfg.hparams_overrides)
        over["use_revive"] = revive_tau is not None
        if revive_tau is not None:
            over["revive_tau"] = float(revive_tau)
        return load_hparams(method, model_key, cfg.hparams_dir, **over)

    def resolve_hparams(self, cfg: BenchConfig, method: str) -> dict:
        hp = self._hparams(cfg, method)
        d = hp.to_dict() if hasattr(hp, "to_dict") else dict(vars(hp))
        d.pop("use_revive", None)
        d.pop("revive_tau", None)
        d.pop("device", None)
        return _json_safe(d)

    def load_model(self, cfg: BenchConfig):
        from revive_plugin.models import load_model

        dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
        model, tok = load_model(cfg.model, device=cfg.device, dtype=dtype)
        model.eval()
        model.requires_grad_(False)
        return model, tok

    def make_editor(self, cfg: BenchConfig, method: str, model, tok, revive_tau=None):
        hp = self._hparams(cfg, method, revive_tau)
        if cfg.host == "easyedit":
            from revive_plugin.easyedit.sequential import EasyEditSequentialEditor
            return EasyEditSequentialEditor(method, model, tok, hp)
        from revive_plugin.editing import make_editor
        return make_editor(method, model, tok, hp)

    def get_param(self, model, name: str) -> torch.nn.Parameter:
        return get_parameter(model, name)

    def evaluate_edits(self, cfg: BenchConfig, model, tok, records, generation: bool) -> dict:
        from revive_plugin.evaluation.counterfact import ConsistencyReferences, evaluate_counterfact

        if not records:
            return {}
        refs = None
        if generation:
            if getattr(self, "_references", None) is None:
                self._references = ConsistencyReferences(self.load_records(cfg))  # the whole fact set
            refs = self._references
        raw = evaluate_counterfact(model, tok, records, batch_size=cfg.eval_batch_size, generation=generation,
                                   max_paraphrase=cfg.n_paraphrase, max_neighborhood=cfg.n_neighborhood,
                                   generation_records=cfg.n_generation, generation_protocol=cfg.generation_protocol,
                                   generation_seed=cfg.seed, references=refs, progress=False)
        return normalize_edit_metrics(raw)

    def general_evaluator(self, cfg: BenchConfig, model, tok, probe_records=(), state_path=None):
        return GeneralEvaluator(cfg, model, tok, probe_records=probe_records, state_path=state_path)
