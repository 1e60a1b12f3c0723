"""Sequential-editing benchmark: methods x {plain, +REVIVE}, resumable (paper §4).

The model is loaded once. Each arm (method, mode, tau) starts from the original weights
(a CPU copy of just the edited parameters is kept), builds a fresh editor and applies the
first N records in rounds of B. After every R-th round and the last one it evaluates ALL
edits made so far (retention, not edit-time success), general ability and the spectral
metrics (LS Eq. 3, SS §2.3, norm growth) of every edited matrix — all inside the editor's
``evaluation_view()`` (PRUNE's reference timing evaluates its restrained weights there) — and writes
``checkpoints/round-NNNNN.json``. The state after each round is saved atomically, so
``resume=True`` continues from the last completed round with the same numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .alarm import DriftAlarm
from .config import BenchConfig, config_diff, config_hash, records_fingerprint
from .state import (
    EDITOR_DIR, PARAMS_FILE, REPR_FINAL_FILE, ArmProgress, atomic_write_json, load_tensors, prune_states,
    read_json, save_tensors_atomic, write_round_state,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
BASELINE_FILE = "baseline.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Arm:
    """One curve of the comparison: a method, plain or with REVIVE at threshold ``tau``."""

    method: str
    mode: str            # "plain" | "revive"
    tau: float | None
    sweep: bool = False  # several taus: the folder name carries the tau

    @property
    def name(self) -> str:
        base = f"{self.method.lower()}-{self.mode}"
        return f"{base}-tau{self.tau:g}" if (self.mode == "revive" and self.sweep) else base

    @property
    def label(self) -> str:
        if self.mode == "plain":
            return self.method
        return f"{self.method}+REVIVE" + (f" (τ={self.tau:g})" if self.sweep else "")


def arms_for(cfg: BenchConfig) -> list[Arm]:
    sweep = len(cfg.taus) > 1
    arms = []
    for m in cfg.methods:
        if cfg.plain:
            arms.append(Arm(m, "plain", None, sweep))
        arms += [Arm(m, "revive", t, sweep) for t in cfg.taus]
    return arms


def derive_seed(*parts) -> int:
    """Stable 63-bit seed from parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % (2 ** 32))
    except ImportError:
        pass


def trim_record(rec: dict, n_para: int | None, n_neigh: int | None) -> dict:
    """Copy of a record with at most n paraphrase / neighborhood prompts (None keeps all)."""
    out = dict(rec)
    if n_para is not None and isinstance(out.get("paraphrase_prompts"), list):
        out["paraphrase_prompts"] = out["paraphrase_prompts"][:n_para]
    if n_neigh is not None:
        for key in ("neighborhood_prompts", "neighborhood_targets"):
            if isinstance(out.get(key), list):
                out[key] = out[key][:n_neigh]
    return out


@dataclass
class RunResult:
    run_dir: Path
    status: str                 # "complete" | "interrupted"
    arms: list
    outputs: dict


class BenchRun:
    """One benchmark run folder. ``prepare()`` validates and binds the folder; ``run()`` edits.

    ``components`` supplies the model, data, editors and evaluators (default: this project's
    modules, see :mod:`revive_plugin.bench.components`); tests inject small fakes.
    """

    def __init__(self, cfg: BenchConfig, run_dir, components=None, resume: bool = False,
                 echo: Callable[[str], None] | None = None, command: str | None = None):
        self.cfg = cfg
        self.command = command
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.echo = echo or (lambda s: None)
        if components is None:
            from .components import ProjectComponents
            components = ProjectComponents()
        self.c = components
        self.records = None
        self.hparams = None
        self.hash = None
        self.model = self.tok = None
        self.originals: dict[str, torch.Tensor] = {}
        self.general = None
        self._transposed: bool | None = None
        self.alarm = DriftAlarm(cfg.alarm_ls, cfg.alarm_ss, cfg.alarm_action)

    # ------------------------------------------------------------------ setup
    def prepare(self) -> "BenchRun":
        """Validate everything and bind the run folder; writes nothing before all checks pass."""
        self.cfg.validate()
        if hasattr(self.c, "check"):
            self.c.check(self.cfg)
        names = [a.name for a in arms_for(self.cfg)]
        unknown = [a for a in self.cfg.only_arms or () if a not in names]
        if unknown:
            raise ValueError(f"only_arms: {unknown} are not arms of this configuration; its arms are {names}")
        known = {m.lower() for m in self.c.known_methods()}
        for m in self.cfg.methods:
            if m.lower() not in known:
                raise ValueError(f"method {m!r} is not available from this engine; available: {sorted(known)}")
        records = self.c.load_records(self.cfg)
        if self.cfg.n_edits > len(records):
            src = self.cfg.data or "the default fact set"
            raise ValueError(f"n_edits N={self.cfg.n_edits} exceeds the {len(records)} records in {src}")
        self.records = records[: self.cfg.n_edits]
        self.unedited_records = records[self.cfg.n_edits:]
        self.data_fingerprint = records_fingerprint(records)
        self.hparams = {m: self.c.resolve_hparams(self.cfg, m) for m in self.cfg.methods}
        self.hash = config_hash(self.cfg, self.hparams, self.data_fingerprint)
        cfg_path = self.run_dir / CONFIG_FILE
        if self.resume:
            if not cfg_path.is_file():
                raise FileNotFoundError(f"--resume: {self.run_dir} has no {CONFIG_FILE}; not a benchmark run folder")
            stored = read_json(cfg_path)
            if stored.get("config_hash") != self.hash:
                diff = config_diff(stored.get("hash_payload", {}), self.cfg.hash_payload())
                if stored.get("hparams") != self.hparams:
                    diff.append("hparams (method YAML contents)")
                if stored.get("data_fingerprint") != self.data_fingerprint:
                    diff.append("data (edit records)")
                raise ValueError(
                    f"run folder {self.run_dir} was made with another configuration "
                    f"(differs in: {', '.join(diff) or 'unknown'}); refusing to resume it. "
                    "Resume with the same settings or start a new --out folder.")
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise ValueError(
                f"output folder {self.run_dir} is not empty; pass --resume {self.run_dir} to continue it "
                "or choose a new --out folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            atomic_write_json(cfg_path, self._config_record())
        return self

    def _config_record(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "config_hash": self.hash,
            "config": self.cfg.to_dict(),
            "hash_payload": self.cfg.hash_payload(),
            "hparams": self.hparams,
            "data_fingerprint": self.data_fingerprint,
            "arms": [a.name for a in arms_for(self.cfg)],
            "checkpoint_rounds": self.cfg.checkpoint_rounds(),
            "command": self.command,
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "machine": platform.machine(), "threads": torch.get_num_threads()},
        }

    def _load_model(self):
        if self.model is None:
            self.model, self.tok = self.c.load_model(self.cfg)

    # ------------------------------------------------------------------ evaluation
    def eval_records(self, edits_done: int) -> list[dict]:
        """The edits made so far (all of them, or a fixed seeded subsample of eval_max_edits)."""
        idx = list(range(edits_done))
        cap = self.cfg.eval_max_edits
        if cap is not None and cap < edits_done:
            idx = sorted(random.Random(derive_seed(self.cfg.seed, "eval", edits_done)).sample(idx, cap))
        return [trim_record(self.records[i], self.cfg.n_paraphrase, self.cfg.n_neighborhood) for i in idx]

    def _evaluate(self, edits_done: int, with_generation: bool) -> dict:
        seed_all(derive_seed(self.cfg.seed, "evaluate", edits_done))
        recs = self.eval_records(edits_done)
        out = {"n_eval_records": len(recs)}
        t0 = time.perf_counter()
        out["edit"] = self.c.evaluate_edits(self.cfg, self.model, self.tok, recs, generation=False)
        if with_generation and self.cfg.n_generation > 0:
            gen = self.c.evaluate_edits(self.cfg, self.model, self.tok, recs[: self.cfg.n_generation],
                                        generation=True)
            for key in ("fluency", "consistency"):
                if key in gen:
                    out["edit"][key] = gen[key]
        out["edit_eval_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out["general"] = self.general.evaluate(self.model, self.tok) if self.general is not None else {}
        out["general_eval_seconds"] = time.perf_counter() - t0
        return out

    def _target(self, name: str):
        """The analysed matrix of parameter ``name``: GPT-2's Conv1D weights are stored (in, out), so the
        SVD of Eq. 1 (left = output side, right = input side) runs on the transposed tensor, as in
        :mod:`revive_plugin.analysis.drift`."""
        from revive_plugin.analysis.targets import Target, storage_transposed

        if self._transposed is None:
            self._transposed = storage_transposed(self.model)
        return Target(name, transposed=self._transposed)

    def _current_matrix(self, name: str) -> torch.Tensor:
        wt = self.c.get_param(self.model, name).detach().to("cpu", torch.float32)
        return self._target(name).math_view(wt)

    def _spectral(self, names) -> dict:
        from revive_plugin.spectral import SpectralReference, singular_vector_similarity, spectral_report

        per = {}
        for name in names:
            ref = self._refs.get(name)
            if ref is None:
                w0 = self._target(name).math_view(self.originals[name].float())
                ref = self._refs[name] = SpectralReference.from_weight(w0, tau=self.cfg.spectral_tau)
            per[name] = spectral_report(ref, self._current_matrix(name), tau=self.cfg.spectral_tau)
        keys = sorted({k for rep in per.values() for k in rep})
        mean = {k: sum(rep[k] for rep in per.values()) / len(per) for k in keys} if per else {}
        worst = {f"{k}_min": min(rep[k] for rep in per.values()) for k in ("ls", "ss_left_mean_max",
                                                                          "ss_right_mean_max") if per}
        out = {"per_param": per, "mean": mean, **({"worst": worst} if per else {})}
        if per:
            name = list(per)[-1]
            ssv = singular_vector_similarity(self._refs[name], self._current_matrix(name),
                                             tau=self.cfg.spectral_tau, side="right")
            k = min(ssv.k, 64)
            out["ss_block"] = {"param": name, "k": ssv.k, "matrix": ssv.matrix[:k, :k].tolist()}
        return out

    # ------------------------------------------------------------------ weights
    def _remember_originals(self, names) -> None:
        for name in names:
            if name not in self.originals:
                self.originals[name] = self.c.get_param(self.model, name).detach().to("cpu").clone()

    @torch.no_grad()
    def _restore_originals(self) -> None:
        for name, w in self.originals.items():
            p = self.c.get_param(self.model, name)
            p.copy_(w.to(device=p.device, dtype=p.dtype))

    @torch.no_grad()
    def _load_params(self, tensors: dict) -> None:
        for name, w in tensors.items():
            p = self.c.get_param(self.model, name)
            if tuple(p.shape) != tuple(w.shape):
                raise ValueError(f"saved state for {name} has shape {tuple(w.shape)}, model has {tuple(p.shape)}")
            p.copy_(w.to(device=p.device, dtype=p.dtype))

    # ------------------------------------------------------------------ main loop
    def run(self, stop_after_rounds: int | None = None, progress: bool = True, plots: bool = True) -> RunResult:
        """Run (or continue) every arm, then write the reports (``plots=False``: no PNGs).

        ``stop_after_rounds`` ends the call after that many completed rounds (deterministic
        interruption for tests); the folder can then be resumed."""
        if self.hash is None:
            self.prepare()
        self._refs = {}
        self._load_model()
        arms = [a for a in arms_for(self.cfg) if self.cfg.only_arms is None or a.name in self.cfg.only_arms]
        budget = [stop_after_rounds]
        if self.general is None:
            self.general = self.c.general_evaluator(self.cfg, self.model, self.tok,
                                                    probe_records=self.unedited_records,
                                                    state_path=self.run_dir / "general_state.json")
        baseline_path = self.run_dir / BASELINE_FILE
        if not baseline_path.exists():
            self.echo("evaluating the unedited model (baseline) ...")
            base = self._evaluate(self.cfg.n_edits, with_generation=self.cfg.generation != "none")
            atomic_write_json(baseline_path, {"arm": "baseline", "round": 0, "edits": 0, **base})
        status = "complete"
        for arm in arms:
            if self._run_arm(arm, budget, progress) == "interrupted":
                status = "interrupted"
                break
        outputs = {}
        if status == "complete":
            from .report import write_reports
            outputs = write_reports(self.run_dir, plots=plots)
        return RunResult(self.run_dir, status, [a.name for a in arms], outputs)

    def _run_arm(self, arm: Arm, budget: list, progress: bool) -> str:
        cfg = self.cfg
        arm_dir = self.run_dir / "arms" / arm.name
        prog = ArmProgress.load(arm_dir)
        if prog is not None and prog.config_hash != self.hash:
            raise ValueError(f"{arm_dir} belongs to another configuration (hash {prog.config_hash} != {self.hash})")
        if prog is not None and prog.status in ("done", "stopped"):
            return prog.status
        if prog is None:
            prog = ArmProgress(arm=arm.name, config_hash=self.hash, n_rounds=cfg.n_rounds)
        self._restore_originals()
        editor = self.c.make_editor(cfg, arm.method, self.model, self.tok,
                                    revive_tau=arm.tau if arm.mode == "revive" else None)
        self._remember_originals(editor.edited_params)
        if prog.rounds_done > 0:
            state = arm_dir / prog.state_dir
            editor.load(str(state / EDITOR_DIR))
            self._load_params(load_tensors(state / PARAMS_FILE))
        prune_states(arm_dir, prog.state_dir)
        checkpoints = set(cfg.checkpoint_rounds())
        bar = _progress_bar(progress and not cfg.quiet, cfg.n_rounds, prog.rounds_done, arm.label)
        try:
            for r in range(prog.rounds_done, cfg.n_rounds):
                if budget[0] is not None and budget[0] <= 0:
                    return "interrupted"
                seed_all(derive_seed(cfg.seed, arm.name, r))
                batch = self.records[cfg.round_slice(r)]
                t0 = time.perf_counter()
                info = editor.edit(batch) or {}
                dt = time.perf_counter() - t0
                self._remember_originals(editor.edited_params)
                prog.rounds_done, prog.edits_done = r + 1, cfg.round_slice(r).stop
                prog.edit_seconds += dt
                prog.round_seconds.append(dt)
                prog.projection_seconds.append(_projection_seconds(info))
                stop = False
                if prog.rounds_done in checkpoints:
                    stop = self._checkpoint(arm, arm_dir, prog, editor)
                last = prog.rounds_done == cfg.n_rounds or stop
                if last:
                    prog.status = "stopped" if stop and prog.rounds_done < cfg.n_rounds else "done"
                if last or prog.rounds_done % cfg.save_every == 0:
                    self._save(arm_dir, prog, editor)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{prog.edits_done} edits, {dt:.1f}s/round")
                if budget[0] is not None:
                    budget[0] -= 1
                if stop:
                    self.echo(f"{arm.label}: stopped by the drift alarm after round {prog.rounds_done}")
                    break
        finally:
            if bar is not None:
                bar.close()
        return prog.status

    def _checkpoint(self, arm: Arm, arm_dir: Path, prog: ArmProgress, editor) -> bool:
        cfg = self.cfg
        final = prog.rounds_done == cfg.n_rounds
        gen = cfg.generation == "checkpoints" or (cfg.generation == "final" and final)
        t0 = time.perf_counter()
        view = getattr(editor, "evaluation_view", None)  # e.g. PRUNE's restrained weights (reference timing)
        with (view() if view is not None else contextlib.nullcontext()):
            result = self._evaluate(prog.edits_done, with_generation=gen)
            result["spectral"] = self._spectral(editor.edited_params)
        events = self.alarm.check(prog.rounds_done, prog.edits_done, result["spectral"]["per_param"]) \
            if self.alarm.enabled else []
        for ev in events:
            self.echo(ev.message())
            log.warning(ev.message())
        prog.alarms += [e.to_dict() for e in events]
        prog.eval_seconds += time.perf_counter() - t0
        timing = {"edit_seconds_total": prog.edit_seconds,
                  "edits_per_second": prog.edits_done / prog.edit_seconds if prog.edit_seconds > 0 else None,
                  "projection_seconds_total": sum(prog.projection_seconds),
                  "eval_seconds": time.perf_counter() - t0}
        record = {"arm": arm.name, "label": arm.label, "method": arm.method, "mode": arm.mode,
                  "tau": arm.tau, "round": prog.rounds_done, "edits": prog.edits_done, "final": final,
                  **result, "timing": timing, "alarms": [e.to_dict() for e in events]}
        states = getattr(self.general, "last_repr_states", None)
        if final and states is not None:
            save_tensors_atomic(arm_dir / REPR_FINAL_FILE, {"states": states})
        atomic_write_json(arm_dir / "checkpoints" / f"round-{prog.rounds_done:05d}.json", record)
        return self.alarm.should_stop(events)

    def _save(self, arm_dir: Path, prog: ArmProgress, editor) -> None:
        params = {n: self.c.get_param(self.model, n) for n in editor.edited_params}
        prog.rng = {"scheme": "per-round sha256(seed/arm/round)", "seed": self.cfg.seed,
                    "next_round": prog.rounds_done}
        prog.state_dir = write_round_state(arm_dir, prog.rounds_done, params, editor,
                                           {"rounds_done": prog.rounds_done, "edits_done": prog.edits_done})
        prog.save(arm_dir)
        prune_states(arm_dir, prog.state_dir)


def _projection_seconds(info: dict) -> float:
    """Sum of the editor's reported REVIVE projection times (keys containing 'proj')."""
    total = 0.0
    stack = [info]
    while stack:
        d = stack.pop()
        for k, v in d.items():
            if isinstance(v, dict):
                stack.append(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and "proj" in str(k).lower():
                total += float(v)
    return total


def _progress_bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="round", dynamic_ncols=True)


def run_bench(cfg: BenchConfig, run_dir, components=None, resume: bool = False,
              stop_after_rounds: int | None = None, progress: bool = True, plots: bool = True,
              echo: Callable[[str], None] | None = None, command: str | None = None) -> RunResult:
    """Validate, bind ``run_dir`` and run the benchmark (see :class:`BenchRun`); ``command`` (the command line
    that makes ``cfg``) is recorded in config.json for run.md."""
    run = BenchRun(cfg, run_dir, components=components, resume=resume, echo=echo, command=command)
    run.prepare()
    return run.run(stop_after_rounds=stop_after_rounds, progress=progress, plots=plots)


def load_run_config(run_dir) -> BenchConfig:
    """The BenchConfig stored in a run folder (for ``--resume``)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {CONFIG_FILE}; not a benchmark run folder")
    return BenchConfig.from_dict(read_json(path)["config"])
