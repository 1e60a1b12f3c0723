"""The editor: one round of locate-then-edit on the shared core, with hooks that variants override.

Round (MEMIT): target values z at the last edit layer (batched), then for each edit layer in order:
keys K and current output at the last layer → residual spread R → ``solve`` → ``finalize`` → write.
When ``hparams.use_revive`` is on, every written ΔW is first projected by the REVIVE
:class:`~revive_plugin.reviver.Reviver`, whose bases come from the ORIGINAL weights (paper §3, Eq. 6).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import fields
from pathlib import Path

import torch

from .. import nethook
from ..config import ReviveConfig
from ..arch import arch_for, num_layers
from . import core
from .covariance import ensure_stats, load_stats
from .hparams import EditHParams, HParamsError
from .state import COVARIANCE, EDITED_KEYS, ORIGINAL, EditState


class Editor:
    """MEMIT editor; subclasses override :meth:`setup`, :meth:`solve`, :meth:`finalize`,
    :meth:`run_round`, :meth:`after_round` and :meth:`values`."""

    method = "MEMIT"
    hparams_cls: type[EditHParams] = EditHParams
    needs_originals = False
    #: requests per batched value optimisation (None: all requests of the round at once). Bounds memory:
    #: a round of 500 optimised at once held 12.5 GB resident on SmolLM2-135M; chunks give the same values
    values_chunk: int | None = 100

    def __init__(self, model, tok, hparams, state: EditState | None = None, stats_texts=None):
        self.model, self.tok = model, tok
        self.hparams = coerce_hparams(hparams, self.hparams_cls)
        hp = self.hparams
        spec = arch_for(model)
        self.rewrite_tmp = hp.rewrite_module_tmp or spec.rewrite_module_tmp
        self.layer_tmp = hp.layer_module_tmp or spec.layer_module_tmp
        self.transposed = spec.transposed
        self.post_norm_tmp, self.post_norm_offset = spec.ffn_post_norm_tmp, spec.ffn_post_norm_offset
        n = num_layers(model)
        if max(hp.layers) >= n:
            raise ValueError(f"hparams layers {hp.layers} out of range for a model with {n} layers")
        self.state = state if state is not None else EditState(self.method)
        if self.state.method != self.method:
            raise ValueError(f"edit state belongs to method {self.state.method!r}, not {self.method!r}")
        self.stats_texts = stats_texts

    # ------------------------------------------------------------------ names
    @property
    def layers(self) -> list[int]:
        return list(self.hparams.layers)

    def module_name(self, layer: int) -> str:
        return self.rewrite_tmp.format(layer)

    def param_name(self, layer: int) -> str:
        return f"{self.module_name(layer)}.weight"

    @property
    def templates(self):
        return self.resolve_templates()

    def resolve_templates(self):
        """Context templates of keys and values: the bare prompt plus ``context_prefixes`` prefixes, sampled
        from the unedited model (``context_templates: generated``, fixed once per edit sequence and kept
        in the state) or the fixed short prefixes (``fixed``)."""
        hp = self.hparams
        if hp.context_templates == "fixed" or hp.context_prefixes == 0:
            return core.context_templates(hp.context_prefixes)
        generated = self.state.meta.get("context_templates")
        if generated is None:
            from .templates import cached_context_templates

            generated = cached_context_templates(self.model, self.tok, exclude=self.edited_params)
            self.state.meta["context_templates"] = list(generated)
        return (core.CONTEXT_TEMPLATES[0], tuple(generated[: hp.context_prefixes]))

    @property
    def edited_params(self) -> list[str]:
        return [self.param_name(l) for l in self.layers]

    @property
    def z_module(self) -> str:
        return self.layer_tmp.format(self.layers[-1])

    def weight(self, layer: int) -> torch.nn.Parameter:
        return nethook.get_parameter(self.model, self.param_name(layer))

    def weight_out_in(self, layer: int) -> torch.Tensor:
        return core.from_storage(self.weight(layer).detach(), self.transposed)

    # ------------------------------------------------------------- resources
    def covariance(self, layer: int) -> torch.Tensor:
        """E[kkᵀ] of ``layer`` (float32, on the weight's device), from the state or the stats file."""
        name = self.module_name(layer)
        cov = self.state.of(COVARIANCE, name)
        if cov is None:
            hp = self.hparams
            missing = [l for l in self.layers if self.state.of(COVARIANCE, self.module_name(l)) is None]
            paths = ensure_stats(
                self.model, self.tok, [self.module_name(l) for l in missing], hp.stats_dir,
                model_name=None, mom2_dataset=hp.mom2_dataset, n_samples=hp.mom2_n_samples,
                dtype=hp.mom2_dtype, texts=self.stats_texts, max_tokens=hp.stats_max_tokens,
                batch_tokens=hp.stats_batch_tokens,
            )
            for l in missing:
                mom2, count = load_stats(paths[self.module_name(l)])
                self.state.put(COVARIANCE, self.module_name(l), (mom2.double() / count).float())
            cov = self.state.of(COVARIANCE, name)
        dev = self.weight(layer).device
        if cov.device != dev:
            cov = cov.to(dev)
            self.state.put(COVARIANCE, name, cov)
        return cov

    def original(self, layer: int) -> torch.Tensor:
        """Original (pre-edit) weight of ``layer`` in storage layout, kept in the state."""
        t = self.state.of(ORIGINAL, self.param_name(layer))
        if t is None:
            raise RuntimeError(f"original weight of {self.param_name(layer)} was not recorded")
        return t

    # ------------------------------------------------------------ edited keys
    def init_edited_keys(self, layer: int) -> None:
        """An empty ``cache_c`` (Σ k kᵀ of the keys already edited, AlphaEdit's K_pK_pᵀ) for ``layer``,
        unless restored."""
        name = self.module_name(layer)
        if self.state.of(EDITED_KEYS, name) is None:
            d = self.covariance(layer).shape[0]
            self.state.put(EDITED_KEYS, name, torch.zeros(d, d, device=self.weight(layer).device))

    def edited_keys(self, layer: int) -> torch.Tensor:
        """Σ k kᵀ of the keys edited so far at ``layer`` (see :meth:`init_edited_keys`)."""
        return self.state.of(EDITED_KEYS, self.module_name(layer))

    @torch.no_grad()
    def accumulate_edited_keys(self, requests) -> None:
        """``cache_c += K Kᵀ`` per edited layer: the keys of this round join the preserved set."""
        names = [self.module_name(l) for l in self.layers]
        keys, _ = core.compute_keys(self.model, self.tok, requests, names, self.hparams.fact_token,
                                    templates=self.templates)
        for name in names:
            K = keys[name].T
            self.state.put(EDITED_KEYS, name, self.state.of(EDITED_KEYS, name).to(K.device) + K @ K.T)

    def prepare(self) -> None:
        """Record originals / REVIVE bases on first use, then the method's own :meth:`setup`."""
        hp = self.hparams
        revive = ReviveConfig.of(hp)
        if self.needs_originals or revive.enabled:
            for l in self.layers:
                if self.state.of(ORIGINAL, self.param_name(l)) is None:
                    self.state.put(ORIGINAL, self.param_name(l), self.weight(l).detach().clone())
        if revive.enabled:
            from ..reviver import Reviver

            if self.state.reviver is None:
                self.state.reviver = Reviver(tau=revive.tau)
            elif abs(self.state.reviver.tau - revive.tau) > 1e-12:
                raise ValueError(
                    f"revive_tau {revive.tau} differs from the state's τ {self.state.reviver.tau}; "
                    "reset the state to change it"
                )
            originals = {self.param_name(l): self.original(l) for l in self.layers}
            self.state.reviver.protect(self.model, self.edited_params, originals=originals)
        self.resolve_templates()  # generated templates are sampled before the first write
        self.setup()

    # ------------------------------------------------------------------ hooks
    def setup(self) -> None:
        """Method-specific one-time preparation (default: covariances)."""
        for l in self.layers:
            self.covariance(l)

    def values(self, requests: list[dict]) -> torch.Tensor:
        return core.compute_target_values(self.model, self.tok, requests, self.hparams, self.z_module,
                                          templates=self.templates, chunk_size=self.values_chunk)

    def layer_inputs(self, requests, layer):
        """(keys n × d_in, current output of the last edit layer n × hidden)."""
        keys, cur_z = core.compute_keys(self.model, self.tok, requests, [self.module_name(layer)],
                                        self.hparams.fact_token, z_module=self.z_module, templates=self.templates)
        return keys[self.module_name(layer)], cur_z

    def layer_residual(self, i: int, layer: int, z: torch.Tensor, cur_z: torch.Tensor,
                       keys: torch.Tensor) -> torch.Tensor:
        """What the ``i``-th edit layer's FFN output should gain (n × hidden): MEMIT's spread of z − cur_z,
        pulled back through the post-FFN norm on architectures that have one (Gemma)."""
        resid = core.spread_residual(z, cur_z, i, len(self.layers))
        if self.post_norm_tmp is None:
            return resid
        norm = nethook.get_parameter(self.model, f"{self.post_norm_tmp.format(layer)}.weight").detach()
        out = keys.to(torch.float32) @ self.weight_out_in(layer).to(keys.device, torch.float32).T
        return core.pull_back_post_norm(resid, out, norm.to(keys.device, torch.float32) + self.post_norm_offset)

    def solve(self, i: int, layer: int, keys: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        """ΔW (out × in, float64): MEMIT's R Kᵀ (λC + KKᵀ)⁻¹."""
        return core.memit_solve(keys, resid, self.covariance(layer), self.hparams.mom2_update_weight)

    def finalize(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        """Last change to ΔW (storage layout, float32) before REVIVE and the write."""
        return delta

    def run_round(self, requests: list[dict], z: torch.Tensor) -> dict:
        info = {}
        for i, layer in enumerate(self.layers):
            keys, cur_z = self.layer_inputs(requests, layer)
            resid = self.layer_residual(i, layer, z, cur_z, keys)
            delta = self.solve(i, layer, keys, resid)
            info[self.param_name(layer)] = self.write(layer, delta)
        return info

    def after_round(self, requests: list[dict]) -> None:
        """Update sequential state after the weights are written (default: nothing)."""

    @contextlib.contextmanager
    def evaluation_view(self):
        """Context in which the model holds the weights to evaluate; restores the edited ones after.

        Default: the edited weights themselves (nothing to swap). PRUNE's reference timing swaps in
        its restrained weights here. Evaluators (the benchmark) wrap every evaluation in it."""
        yield self.model

    # ------------------------------------------------------------------ write
    @torch.no_grad()
    def write(self, layer: int, delta_out_in: torch.Tensor) -> dict:
        """Add ΔW (out × in) to the layer's weight: storage layout → :meth:`finalize` → REVIVE → ``+=``."""
        w = self.weight(layer)
        d = core.to_storage(delta_out_in, w, self.transposed).to(device=w.device, dtype=torch.float32)
        d = self.finalize(layer, d)
        return self.add_delta(layer, d)

    @torch.no_grad()
    def add_delta(self, layer: int, d: torch.Tensor) -> dict:
        """``W += ΔW`` (storage layout), projected first when REVIVE is on."""
        w = self.weight(layer)
        name = self.param_name(layer)
        info = {}
        if self.hparams.use_revive:
            t0 = time.perf_counter()
            d = self.state.reviver.project(name, d)
            info["time_project_s"] = _synced_seconds(d, t0)
        w[...] += d.to(dtype=w.dtype)
        info["delta_norm"] = float(d.float().norm())
        return info

    # ------------------------------------------------------------------ round
    def edit(self, requests) -> dict:
        """One round: edit ``requests`` in place (sequential across calls); returns timings/info."""
        if isinstance(requests, dict):
            requests = [requests]
        reqs = [core.normalize_request(r) for r in requests]
        if not reqs:
            raise ValueError("no requests to edit")
        t0 = time.perf_counter()
        self.prepare()
        t1 = time.perf_counter()
        z = self.values(reqs)
        t2 = time.perf_counter()
        layers = self.run_round(reqs, z)
        self.after_round(reqs)
        t3 = time.perf_counter()
        self.state.meta["rounds"] = int(self.state.meta.get("rounds", 0)) + 1
        self.state.meta["edits"] = int(self.state.meta.get("edits", 0)) + len(reqs)
        return {"method": self.method, "n_requests": len(reqs), "time_prepare_s": t1 - t0,
                "time_values_s": t2 - t1, "time_update_s": t3 - t2, "layers": layers}

    def host_edit(self, requests) -> dict:
        """One round under EasyEdit's ``apply_*`` contract, whose host evaluates the model right after
        the call (default: :meth:`edit`; PRUNE's reference timing leaves its evaluation weights)."""
        return self.edit(requests)

    # ------------------------------------------------------------------ persistence
    def save(self, directory) -> Path:
        return self.state.save(directory)

    def load(self, directory) -> None:
        """Replace this editor's state with one saved by :meth:`save` (weights are not touched)."""
        state = EditState.load(directory, device=self.weight(self.layers[0]).device)
        if state.method != self.method:
            raise ValueError(f"{directory}: state of method {state.method!r}, expected {self.method!r}")
        self.state = state


@contextlib.contextmanager
def swapped_weights(model, tensors: dict[str, torch.Tensor]):
    """Temporarily replace parameters (name -> value); restores the current values afterwards."""
    saved = {}
    try:
        with torch.no_grad():
            for name, value in tensors.items():
                p = nethook.get_parameter(model, name)
                saved[name] = p.detach().clone()
                p.copy_(value.to(p.device, p.dtype))
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                nethook.get_parameter(model, name).copy_(value)


def coerce_hparams(hparams, cls: type[EditHParams]) -> EditHParams:
    """``hparams`` as an instance of ``cls``: ours as is, a YAML path, a dict, or a foreign object with
    the same attribute names (e.g. EasyEdit's own hparams instance)."""
    if isinstance(hparams, cls):
        return hparams
    if isinstance(hparams, (str, Path)):
        return cls.from_hparams(hparams)
    if isinstance(hparams, dict):
        return cls.from_dict(hparams)
    if isinstance(hparams, EditHParams):
        raise HParamsError(f"hparams of type {type(hparams).__name__} given to a {cls.__name__} editor")
    known = {f.name for f in fields(cls)}
    data = {k: v for k, v in vars(hparams).items() if k in known}
    return cls.from_dict(data, source=type(hparams).__name__)


def _synced_seconds(t: torch.Tensor, t0: float) -> float:
    """Seconds since ``t0`` once the work producing ``t`` has finished (CUDA kernels run asynchronously)."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)
    return time.perf_counter() - t0
