"""Batched model scoring shared by all evaluators.

:func:`score_continuations` runs prompt+target concatenations through the
model in left-padded batches (sorted by length, explicit position ids), keeps
logits only for the target positions where the model supports it
(``logits_to_keep``), and returns per-pair mean token NLL and teacher-forced
top-1 predictions.  :func:`next_token_logprobs` scores candidate next tokens
after a prompt; :func:`greedy_generate` is batched greedy decoding.
"""

from __future__ import annotations

import inspect
import unicodedata
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .._util import model_device, pad_batch, pad_id


@dataclass(frozen=True)
class ContinuationScore:
    """Scores of one target continuation: mean token NLL, target ids and top-1 predictions."""

    nll: float
    target_ids: tuple[int, ...]
    predicted_ids: tuple[int, ...]

    @property
    def accuracy(self) -> float:
        """Teacher-forced top-1 accuracy over the target tokens."""
        return sum(p == t for p, t in zip(self.predicted_ids, self.target_ids)) / len(self.target_ids)

    @property
    def exact(self) -> bool:
        """Whether every target token is the top-1 prediction (greedy decoding yields the target)."""
        return self.predicted_ids == self.target_ids


def with_space(target: str) -> str:
    """Targets follow the prompt after one space, as in MEMIT's evaluation."""
    return target if target.startswith(" ") else " " + target


def _keep_kwarg(model) -> str | None:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def _left_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask = pad_batch(seqs, pad, device, left=True)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def forward_last(model, ids, mask, pos, keep: int) -> torch.Tensor:
    """Logits (float32) of the last ``keep`` positions of a left-padded batch."""
    kwarg = _keep_kwarg(model)
    kwargs = {kwarg: keep} if kwarg else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **kwargs)
    return out.logits[:, -keep:].float()


def encode_prompts(tok, prompts: list[str]) -> list[list[int]]:
    """Token ids of prompts (with the tokenizer's own special tokens)."""
    return [list(x) for x in tok(list(prompts))["input_ids"]] if prompts else []


def encode_targets(tok, targets: list[str]) -> list[list[int]]:
    """Token ids of targets, each with a leading space, without special tokens."""
    uniq = sorted(set(targets))
    ids = tok([with_space(t) for t in uniq], add_special_tokens=False)["input_ids"] if uniq else []
    table = dict(zip(uniq, ids))
    out = []
    for t in targets:
        if not table[t]:
            raise ValueError(f"target {t!r} encodes to no tokens")
        out.append(list(table[t]))
    return out


@torch.inference_mode()
def score_continuations(
    model, tok, prompts: list[str], targets: list[str], batch_size: int = 32, progress: bool = True, desc: str = "scoring"
) -> list[ContinuationScore]:
    """Mean token NLL and top-1 predictions of ``targets[i]`` after ``prompts[i]``.

    Identical (prompt, target) pairs are scored once.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pairs = sorted(set(zip(prompts, targets)))
    if not pairs:
        return []
    p_ids = encode_prompts(tok, [p for p, _ in pairs])
    t_ids = encode_targets(tok, [t for _, t in pairs])
    order = sorted(range(len(pairs)), key=lambda i: (len(p_ids[i]) + len(t_ids[i]), len(t_ids[i])))
    device, pad = model_device(model), pad_id(tok)
    results: dict[tuple[str, str], ContinuationScore] = {}
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        seqs = [p_ids[i] + t_ids[i] for i in batch]
        ids, mask, pos = _left_pad(seqs, pad, device)
        t_max = max(len(t_ids[i]) for i in batch)
        logits = forward_last(model, ids, mask, pos, t_max + 1)[:, :-1]
        logp = torch.log_softmax(logits, dim=-1)
        top = logits.argmax(-1).cpu()
        for row, i in enumerate(batch):
            tgt = t_ids[i]
            n = len(tgt)
            lp = logp[row, t_max - n :].gather(-1, torch.tensor(tgt, device=logp.device)[:, None])
            results[pairs[i]] = ContinuationScore(
                nll=float(-lp.mean()),
                target_ids=tuple(tgt),
                predicted_ids=tuple(top[row, t_max - n :].tolist()),
            )
    return [results[(p, t)] for p, t in zip(prompts, targets)]


def _packed_batch(seqs, device, dtype):
    """Left-padded ids, additive 4D mask and positions for [prompt, a, b] rows (b does not see a)."""
    width = max(len(p) + len(a) + len(b) for p, a, b in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    allow = torch.zeros((len(seqs), width, width), dtype=torch.bool)
    pos = torch.zeros((len(seqs), width), dtype=torch.long)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    eye = torch.eye(width, dtype=torch.bool)
    for r, (p, a, b) in enumerate(seqs):
        start = width - len(p) - len(a) - len(b)
        ids[r, start:] = torch.tensor(p + a + b, dtype=torch.long)
        pos[r, start:] = torch.tensor(list(range(len(p) + len(a))) + list(range(len(p), len(p) + len(b))))
        row = causal.clone()
        row[:, :start] = False
        b0 = start + len(p) + len(a)
        row[b0:, start + len(p) : b0] = False
        allow[r] = row | eye
    mask = torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, torch.finfo(dtype).min)
    return ids.to(device), mask[:, None].to(device), pos.to(device)


@torch.inference_mode()
def score_pairs(
    model, tok, prompts: list[str], targets_a: list[str], targets_b: list[str], batch_size: int = 32,
    progress: bool = True, desc: str = "scoring",
) -> list[tuple[ContinuationScore, ContinuationScore]]:
    """Scores of two targets after each prompt, packed into one row: [prompt, a, b].

    A 4D attention mask hides ``a`` from ``b`` and ``b`` reuses ``a``'s positions,
    so the prompt is computed once per pair.  Falls back to
    :func:`score_continuations` if the model rejects custom 4D masks.
    """
    if not (len(prompts) == len(targets_a) == len(targets_b)):
        raise ValueError(f"length mismatch: {len(prompts)} prompts, {len(targets_a)} / {len(targets_b)} targets")
    triples = sorted(set(zip(prompts, targets_a, targets_b)))
    if not triples:
        return []
    p_ids = encode_prompts(tok, [t[0] for t in triples])
    a_ids = encode_targets(tok, [t[1] for t in triples])
    b_ids = encode_targets(tok, [t[2] for t in triples])
    lens = [len(p) + len(a) + len(b) for p, a, b in zip(p_ids, a_ids, b_ids)]
    order = sorted(range(len(triples)), key=lambda i: (lens[i], len(a_ids[i]) + len(b_ids[i])))
    device = model_device(model)
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:
        dtype = torch.float32
    results: dict[tuple[str, str, str], tuple[ContinuationScore, ContinuationScore]] = {}
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        seqs = [(p_ids[i], a_ids[i], b_ids[i]) for i in batch]
        ids, mask, pos = _packed_batch(seqs, device, dtype)
        keep = max(len(a) + len(b) for _, a, b in seqs) + 1
        try:
            logits = forward_last(model, ids, mask, pos, keep)
        except (TypeError, ValueError, RuntimeError):
            return _pairs_unpacked(model, tok, prompts, targets_a, targets_b, batch_size, progress, desc)
        logp = torch.log_softmax(logits, dim=-1)
        top = logits.argmax(-1).cpu()
        for row, (i, (_, a, b)) in enumerate(zip(batch, seqs)):
            la, lb = len(a), len(b)
            # positions (relative to the kept window) predicting each target token
            last = keep - la - lb - 1
            a_src = [last + j for j in range(la)]
            b_src = [last] + [keep - lb + j for j in range(lb - 1)]
            results[triples[i]] = tuple(
                ContinuationScore(
                    nll=float(-logp[row, src].gather(-1, torch.tensor(t, device=logp.device)[:, None]).mean()),
                    target_ids=tuple(t),
                    predicted_ids=tuple(top[row, src].tolist()),
                )
                for src, t in ((a_src, a), (b_src, b))
            )
    return [results[t] for t in zip(prompts, targets_a, targets_b)]


def _pairs_unpacked(model, tok, prompts, targets_a, targets_b, batch_size, progress, desc):
    scores = score_continuations(model, tok, list(prompts) * 2, list(targets_a) + list(targets_b), batch_size, progress, desc)
    n = len(prompts)
    return list(zip(scores[:n], scores[n:]))


@torch.inference_mode()
def next_token_logprobs(
    model, tok, prompts: list[str], candidate_ids: list[int], batch_size: int = 16, progress: bool = True, desc: str = "scoring"
) -> torch.Tensor:
    """Log-probabilities (N, len(candidate_ids)) of candidate next tokens after each prompt."""
    if not prompts:
        return torch.zeros((0, len(candidate_ids)))
    ids_all = encode_prompts(tok, prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(ids_all[i]))
    out = torch.zeros((len(prompts), len(candidate_ids)))
    device, pad = model_device(model), pad_id(tok)
    cand = torch.tensor(candidate_ids, dtype=torch.long)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        ids, mask, pos = _left_pad([ids_all[i] for i in batch], pad, device)
        logp = torch.log_softmax(forward_last(model, ids, mask, pos, 1)[:, -1], dim=-1).cpu()
        out[torch.tensor(batch)] = logp[:, cand]
    return out


@torch.inference_mode()
def greedy_generate(
    model, tok, prompts: list[str], max_new_tokens: int = 40, batch_size: int = 16, progress: bool = True
) -> list[str]:
    """Greedy continuations, returned as prompt + generated text (as MEMIT scores them)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ids_all = encode_prompts(tok, prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(ids_all[i]))
    texts: list[str] = [""] * len(prompts)
    device, pad = model_device(model), pad_id(tok)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="generating", disable=not progress, leave=False):
        ids, mask, _ = _left_pad([ids_all[i] for i in batch], pad, device)
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        new = gen[:, ids.shape[1] :].cpu()
        for row, i in enumerate(batch):
            cont = tok.decode(new[row].tolist(), skip_special_tokens=True)
            texts[i] = prompts[i] + cont
    return texts


def clean_generated(text: str) -> str:
    """MEMIT's post-processing of a generated text: NFKD normal form, blank lines joined by a space."""
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ")


def sample_generate(
    model, tok, prompts: list[str], max_out_len: int = 100, top_k: int = 5, seed: int = 0,
    batch_size: int = 16, progress: bool = True,
) -> list[str]:
    """MEMIT's ``generate_fast`` protocol: top-``top_k`` sampling (temperature 1) until each sequence holds
    ``max_out_len`` tokens, its prompt included; returns prompt + continuation per prompt.

    Seeded: the torch RNG is forked and seeded with ``seed``, so the global RNG state is untouched and the
    same prompts give the same texts on the same device. End-of-text is not sampled before the length is
    reached (MEMIT keeps sampling after it and strips the marker). Prompts run in length-sorted batches.
    """
    if max_out_len < 1 or top_k < 1:
        raise ValueError(f"max_out_len and top_k must be >= 1, got {max_out_len}, {top_k}")
    ids_all = encode_prompts(tok, prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(ids_all[i]))
    texts: list[str] = [clean_generated(p) for p in prompts]
    device, pad = model_device(model), pad_id(tok)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in tqdm(batches, desc="sampling", disable=not progress, leave=False):
            budgets = [max_out_len - len(ids_all[i]) for i in batch]
            n_new = max(budgets)
            if n_new <= 0:
                continue
            ids, mask, _ = _left_pad([ids_all[i] for i in batch], pad, device)
            gen = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, top_k=top_k, top_p=1.0, temperature=1.0,
                max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=pad,
            )
            new = gen[:, ids.shape[1] :].cpu()
            for row, (i, budget) in enumerate(zip(batch, budgets)):
                cont = tok.decode(new[row, : max(budget, 0)].tolist(), skip_special_tokens=True)
                texts[i] = clean_generated(prompts[i] + cont)
    return texts
