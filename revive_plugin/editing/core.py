"""Shared locate-then-edit core (MEMIT's recipe), batched over requests.

* keys k: input of the FFN output matrix at the subject's last token, averaged over context
  templates (:func:`compute_keys`; sampled from the unedited model as MEMIT does, see
  :mod:`.templates`, or the fixed :data:`CONTEXT_TEMPLATES`);
* target values z at the last edit layer: Adam on one delta per request, all requests of a round in
  one padded forward/backward per step over the blocks after z and the tokens from the lookup token on
  (:func:`compute_target_values`, :mod:`.forward`); loss = NLL of the new target +
  ``kl_factor``·KL on "{subject} is a" + ``v_weight_decay``·‖δ‖/‖z₀‖², δ clamped to
  ``clamp_norm_factor``·‖z₀‖ (MEMIT);
* residual spread R = (z − current output)/(layers left) and the covariance-weighted least-squares
  solve ΔW = R Kᵀ (λC + KKᵀ)⁻¹ (:func:`memit_solve`); where a norm sits between the FFN output and
  the residual stream (Gemma), R is first pulled back through it (:func:`pull_back_post_norm`).

Deviation from MEMIT (documented in docs/methods.md): the NLL is read from the model's final logits
(MEMIT's ``v_loss_layer`` = last layer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from .. import nethook
from .._util import model_device, pad_batch, pad_id
from ..arch import arch_for
from . import forward as forward_runners

#: Fixed context templates (``context_templates: fixed``): group 0 is the bare prompt, group 1 five short
#: prefixes. Keys average each group, then the groups (MEMIT's weighting); every template is a rewriting
#: prompt for the values.
CONTEXT_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("{}",),
    (
        "The following is a fact. {}",
        "Here is what I know. {}",
        "Note that {}",
        "As reported, {}",
        "In short, {}",
    ),
)
KL_PROMPT = "{} is a"


def context_templates(n_prefixes: int = 5) -> tuple[tuple[str, ...], ...]:
    """The bare prompt plus the first ``n_prefixes`` fixed prefixes."""
    if n_prefixes <= 0:
        return (CONTEXT_TEMPLATES[0],)
    return (CONTEXT_TEMPLATES[0], CONTEXT_TEMPLATES[1][:n_prefixes])


def _target_str(value, key: str, required: bool = True) -> str | None:
    if value is None:
        if required:
            raise ValueError(f"request is missing {key!r}")
        return None
    if isinstance(value, dict):
        if "str" not in value:
            raise ValueError(f"request field {key!r} must be a string or have a 'str' entry")
        value = value["str"]
    if isinstance(value, list):
        value = value[0] if value else ""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"request field {key!r} must be a non-empty string, got {value!r}")
    return value if value.startswith(" ") else " " + value


def rewrite_of(r: dict) -> tuple[dict, object]:
    """The rewrite part of a CounterFact record or EasyEdit request (``requested_rewrite``, its first item
    when a list, else the request itself) and its true target (``target_true``, else ``ground_truth``)."""
    src = r.get("requested_rewrite", r)
    if isinstance(src, list):
        src = src[0]
    return src, src.get("target_true", src.get("ground_truth", r.get("ground_truth")))


def normalize_request(r: dict) -> dict:
    """Canonical request: ``{"prompt" (with "{}"), "subject", "target_new": {"str": " X"},
    "target_true": {"str": " Y"} or None, "case_id"}`` from CounterFact or EasyEdit form."""
    if not isinstance(r, dict):
        raise TypeError(f"request must be a dict, got {type(r).__name__}")
    src, true = rewrite_of(r)
    prompt, subject = src.get("prompt"), src.get("subject")
    if not isinstance(prompt, str) or not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"request needs string 'prompt' and 'subject', got {prompt!r}, {subject!r}")
    if "{}" not in prompt:
        if subject not in prompt:
            raise ValueError(f"subject {subject!r} does not occur in prompt {prompt!r}")
        prompt = prompt.replace(subject, "{}", 1)
    true_str = _target_str(true, "target_true", required=False) if true not in (None, "", "<|endoftext|>") else None
    return {
        "prompt": prompt,
        "subject": subject,
        "target_new": {"str": _target_str(src.get("target_new"), "target_new")},
        "target_true": {"str": true_str} if true_str else None,
        "case_id": r.get("case_id", src.get("case_id")),
    }


def _encode(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=True)["input_ids"])


def target_ids(tok, target: str) -> list[int]:
    """Token ids of a target string (no special tokens; a leading BOS/UNK dropped)."""
    ids = list(tok(target, add_special_tokens=False)["input_ids"])
    if ids and ids[0] in (tok.bos_token_id, tok.unk_token_id) and len(ids) > 1:
        ids = ids[1:]
    if not ids:
        raise ValueError(f"target {target!r} tokenizes to nothing")
    return ids


def encode_at_subject(tok, template: str, subject: str, fact_token: str = "subject_last") -> tuple[list[int], int]:
    """Token ids of ``template.format(subject)`` and the lookup position (``fact_token``)."""
    if "{}" not in template:
        raise ValueError(f"template {template!r} has no '{{}}' for the subject")
    prefix, _, _ = template.partition("{}")
    ids = _encode(tok, template.replace("{}", subject, 1))
    if fact_token == "last":
        return ids, len(ids) - 1
    if fact_token == "subject_first":
        # A trailing space belongs to the subject's first token (as in ROME's repr_tools).
        return ids, min(len(_encode(tok, prefix[:-1] if prefix.endswith(" ") else prefix)), len(ids) - 1)
    return ids, min(len(_encode(tok, prefix + subject)) - 1, len(ids) - 1)


def flat_templates(templates=CONTEXT_TEMPLATES) -> list[tuple[int, str]]:
    return [(g, t) for g, group in enumerate(templates) for t in group]


@torch.no_grad()
def compute_keys(model, tok, requests: Sequence[dict], rewrite_modules: Sequence[str],
                 fact_token: str = "subject_last", z_module: str | None = None,
                 templates=CONTEXT_TEMPLATES, batch_size: int = 256) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Keys (n_requests × d_in, float32) at the input of each module in ``rewrite_modules`` and, when
    ``z_module`` is given, its output (n × hidden) at the lookup token of the bare prompt (group 0)."""
    flat = flat_templates(templates)
    seqs, pos, owner, group = [], [], [], []
    for ri, r in enumerate(requests):
        for g, t in flat:
            ids, p = encode_at_subject(tok, t.format(r["prompt"]), r["subject"], fact_token)
            seqs.append(ids), pos.append(p), owner.append(ri), group.append(g)
    device = model_device(model)
    names = list(rewrite_modules) + ([z_module] if z_module else [])
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in rewrite_modules}
    zs: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            ids, mask = pad_batch(chunk, pad_id(tok), device)
            rows = torch.arange(len(chunk), device=device)
            p = torch.tensor(pos[start : start + batch_size], device=device)
            with nethook.Trace(model, names, inputs=True, outputs=z_module is not None, stop=True) as tr:
                tr.run(model, input_ids=ids, attention_mask=mask, use_cache=False)
            for n in rewrite_modules:
                feats[n].append(tr.inputs[n][rows, p].float())
            if z_module:
                zs.append(tr.outputs[z_module][rows, p].float())
    finally:
        model.train(was_training)
    owner_t = torch.tensor(owner, device=device)
    group_t = torch.tensor(group, device=device)
    n_groups = len(templates)
    keys = {}
    for n in rewrite_modules:
        k = torch.cat(feats[n])
        out = torch.zeros(len(requests), k.shape[1], device=device)
        for g in range(n_groups):
            sel = group_t == g
            sums = torch.zeros_like(out).index_add_(0, owner_t[sel], k[sel])
            cnt = torch.bincount(owner_t[sel], minlength=len(requests)).clamp_min(1).unsqueeze(1)
            out += sums / cnt
        keys[n] = out / n_groups
    cur_z = None
    if z_module:
        z = torch.cat(zs)
        first = torch.zeros(len(seqs), dtype=torch.bool, device=device)
        seen = set()
        for i, (o, g) in enumerate(zip(owner, group)):
            if g == 0 and o not in seen:
                first[i] = True
                seen.add(o)
        cur_z = z[first]
    return keys, cur_z


def _lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(hidden)
    key = arch_for(model).logit_softcap_key
    cap = getattr(model.config, key, None) if key else None
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


def _value_batch(tok, requests, fact_token, templates):
    """Sequences, lookup positions and target/KL bookkeeping for a set of requests."""
    seqs, look_pos, look_req = [], [], []
    tgt_row, tgt_pos, tgt_tok, tgt_req, tgt_w = [], [], [], [], []
    kl_row, kl_pos = [], []
    init_row = []
    flat = flat_templates(templates)
    for ri, r in enumerate(requests):
        t_ids = target_ids(tok, r["target_new"]["str"])
        for ti, (_, t) in enumerate(flat):
            ids, p = encode_at_subject(tok, t.format(r["prompt"]), r["subject"], fact_token)
            row = len(seqs)
            if ti == 0:
                init_row.append(row)
            base = len(ids)
            seqs.append(ids + t_ids[:-1])
            look_pos.append(p), look_req.append(ri)
            for j, tid in enumerate(t_ids):
                tgt_row.append(row), tgt_pos.append(base - 1 + j), tgt_tok.append(tid), tgt_req.append(ri)
                tgt_w.append(1.0 / (len(t_ids) * len(flat)))
        ids, p = encode_at_subject(tok, KL_PROMPT, r["subject"], fact_token)
        kl_row.append(len(seqs)), kl_pos.append(p)
        seqs.append(ids[: p + 1]), look_pos.append(p), look_req.append(ri)  # KL is read at the lookup token
    return dict(seqs=seqs, look_pos=look_pos, look_req=look_req, tgt_row=tgt_row, tgt_pos=tgt_pos,
                tgt_tok=tgt_tok, tgt_req=tgt_req, tgt_w=tgt_w, kl_row=kl_row, kl_pos=kl_pos, init_row=init_row)


def compute_target_values(model, tok, requests: Sequence[dict], hparams, z_module: str,
                          templates=CONTEXT_TEMPLATES, chunk_size: int | None = None,
                          early_stop: float = 5e-2, forward: str = "auto", orth_bases=None,
                          stop_prob: float | None = None) -> torch.Tensor:
    """Target values z (n × hidden, float32) at the output of block ``z_module``.

    Requests are optimised together, ``chunk_size`` at a time (None = all): each keeps its own delta,
    and the summed loss gives every delta exactly its own gradient, so Adam (element-wise) follows the
    same path as a per-request loop; a request whose loss falls below ``early_stop`` is frozen (MEMIT)
    and leaves the batch. ``forward`` picks how the model runs after z (:mod:`.forward`; "auto" = the
    cheapest exact runner: prefix key/value cache, else truncated stack, else the full model).
    ``orth_bases`` (DeltaEdit): per request None or an orthonormal basis U (hidden × r); after every Adam
    step δ ← δ − U Uᵀδ. ``stop_prob``: a request also stops once its target probability, averaged over
    the context prompts, exceeds it.
    """
    n = len(requests)
    chunk = n if not chunk_size else int(chunk_size)
    out = []
    for s in range(0, n, chunk):
        bases = None if orth_bases is None else orth_bases[s : s + chunk]
        out.append(_values_chunk(model, tok, requests[s : s + chunk], hparams, z_module, templates, early_stop,
                                 forward, bases, stop_prob))
    return torch.cat(out)


def _values_chunk(model, tok, requests, hp, z_module, templates, early_stop, mode="auto", bases=None,
                  stop_prob=None):
    device = model_device(model)
    b = _value_batch(tok, requests, hp.fact_token, templates)
    n = len(requests)
    ids, mask = pad_batch(b["seqs"], pad_id(tok), device)
    T = lambda key: torch.tensor(b[key], device=device)  # noqa: E731
    look_pos, look_req, init_row = T("look_pos"), T("look_req"), T("init_row")
    tgt_row, tgt_pos, tgt_tok, tgt_req = T("tgt_row"), T("tgt_pos"), T("tgt_tok"), T("tgt_req")
    tgt_w = torch.tensor(b["tgt_w"], device=device, dtype=torch.float32)
    kl_row, kl_pos = T("kl_row"), T("kl_pos")
    hidden = getattr(model.config, arch_for(model).hidden_size_key)
    delta = torch.zeros(n, hidden, device=device, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    kl_init: torch.Tensor | None = None
    done = torch.zeros(n, dtype=torch.bool, device=device)
    local = torch.full((len(b["seqs"]),), -1, dtype=torch.long, device=device)
    constrained = [(i, u.to(device=device, dtype=torch.float32)) for i, u in enumerate(bases or ()) if u is not None]
    n_flat = len(flat_templates(templates))
    prompt_rows = torch.unique(tgt_row)

    was_training = model.training
    model.eval()
    with contextlib.ExitStack() as stack:
        stack.callback(model.train, was_training)
        stack.enter_context(nethook.frozen(model))
        run, z_lookup = forward_runners.make_runner(model, z_module, ids, mask, look_pos, look_req, stack, mode)
        z_init = z_lookup[init_row]
        for it in range(hp.v_num_grad_steps):
            opt.zero_grad()
            act = (~done).nonzero().squeeze(1)  # requests still optimised
            rows = (~done[look_req]).nonzero().squeeze(1)
            local[rows] = torch.arange(len(rows), device=device)
            last = run(rows, delta)
            t_sel = (~done[tgt_req]).nonzero().squeeze(1)
            t_row = tgt_row[t_sel]
            h_t = last[local[t_row], tgt_pos[t_sel] - run.offset[t_row]]
            logp_t = torch.log_softmax(_lm_logits(model, h_t), dim=-1)
            picked = logp_t.gather(1, tgt_tok[t_sel].unsqueeze(1)).squeeze(1)
            nll = torch.zeros(n, device=device).index_add(0, tgt_req[t_sel], -picked * tgt_w[t_sel])[act]
            k_row = kl_row[act]
            kl_logp = torch.log_softmax(_lm_logits(model, last[local[k_row], kl_pos[act] - run.offset[k_row]]), dim=-1)
            if it == 0:
                kl_init = kl_logp.detach().clone()
            kl = (kl_logp.exp() * (kl_logp - kl_init[act])).sum(-1)
            wd = hp.v_weight_decay * delta[act].norm(dim=1) / z_init[act].norm(dim=1) ** 2
            loss_act = nll + hp.kl_factor * kl + wd
            newly = loss_act.detach() < early_stop
            if stop_prob is not None:
                row_nll = torch.zeros(len(b["seqs"]), device=device).index_add(
                    0, t_row, -picked.detach() * tgt_w[t_sel] * n_flat)
                prob = torch.zeros(n, device=device).index_add(
                    0, look_req[prompt_rows], torch.exp(-row_nll[prompt_rows])) / n_flat
                newly |= prob[act] > stop_prob
            done[act] |= newly
            if bool(done.all()) or it == hp.v_num_grad_steps - 1:
                break
            (loss_act * (~newly).float()).sum().backward()
            keep = delta.detach()[done].clone()
            opt.step()
            with torch.no_grad():
                if keep.numel():
                    delta[done] = keep
                for i, u in constrained:
                    delta[i] -= u @ (u.T @ delta[i])
                max_norm = hp.clamp_norm_factor * z_init.norm(dim=1)
                norms = delta.norm(dim=1)
                scale = torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-12), torch.ones_like(norms))
                delta.mul_(scale.unsqueeze(1))
    return (z_init + delta.detach()).float()


def spread_residual(z: torch.Tensor, cur_z: torch.Tensor, layer_index: int, n_layers: int) -> torch.Tensor:
    """R = (z − current output)/(layers left) (MEMIT's per-layer spread), n × hidden."""
    return (z - cur_z) / (n_layers - layer_index)


def pull_back_post_norm(resid: torch.Tensor, out: torch.Tensor, gain: torch.Tensor, damping: float = 0.1,
                        steps: int = 3, eps: float = 1e-6) -> torch.Tensor:
    """Residual-stream targets R (n × hidden) → targets Δx for the FFN output x = W k (n × hidden) where the
    residual receives N(x) = g ⊙ x / rms(x) (Gemma's post-FFN RMSNorm) instead of x: N(x + Δx) ≈ N(x) + R.

    Damped Gauss-Newton on that equation, ``steps`` steps from Δx = 0, each inverting the Jacobian
    diag(g)(I − x̂x̂ᵀ)/rms(x) at the current point: rms(x)·(I − x̂x̂ᵀ)(E ⊙ g / (g² + ε²)) for the remaining
    error E, ε = ``damping``·median|g| (Tikhonov damping of the channels the norm all but switches off; the
    radial part would only rescale x, so it is dropped).
    """
    if resid.shape != out.shape or gain.shape != out.shape[-1:]:
        raise ValueError(f"pull_back_post_norm: residual {tuple(resid.shape)}, FFN output {tuple(out.shape)} and "
                         f"gain {tuple(gain.shape)} disagree")
    x0 = out.double()
    g = gain.to(x0).double()
    damp = (damping * g.abs().median()) ** 2

    def rms(x):
        return x.pow(2).mean(-1, keepdim=True).add(eps).sqrt()

    target = g * x0 / rms(x0) + resid.double()
    dx = torch.zeros_like(x0)
    for _ in range(steps):
        x = x0 + dx
        step = rms(x) * (target - g * x / rms(x)) * g / (g.pow(2) + damp)
        unit = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
        dx = dx + step - unit * (step * unit).sum(-1, keepdim=True)
    return dx.to(resid.dtype)


def memit_solve(keys: torch.Tensor, resid: torch.Tensor, cov: torch.Tensor, lam: float,
                extra: torch.Tensor | None = None) -> torch.Tensor:
    """ΔW (out × in, float64) = R Kᵀ (λC + [extra] + KKᵀ)⁻¹ with K = keysᵀ (in × n), R = residᵀ (out × n);
    ``extra``: NSE's Σ k kᵀ of the keys edited in earlier rounds."""
    K = keys.T.double()
    R = resid.T.double()
    A = lam * cov.to(K.device, torch.float64)
    if extra is not None:
        A = A + extra.to(K.device, torch.float64)
    A = A + K @ K.T
    X = torch.linalg.solve(A, K)  # A⁻¹ K, in × n (A symmetric)
    return R @ X.T


def to_storage(delta: torch.Tensor, weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """ΔW (out × in) in the parameter's storage layout; clear error if shapes disagree."""
    d = delta.T if transposed else delta
    if tuple(d.shape) != tuple(weight.shape):
        raise ValueError(f"update of shape {tuple(d.shape)} does not match weight of shape {tuple(weight.shape)}")
    return d


def from_storage(weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The (out × in) view of a stored weight."""
    return weight.T if transposed else weight

