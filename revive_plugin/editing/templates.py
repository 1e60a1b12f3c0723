"""Context templates sampled from the unedited model, as MEMIT and AlphaEdit build them.

Five short texts are sampled (top-k 5, each sequence 10 tokens long, prompt included) from the prompts
"The", "Therefore", "Because", "I", "You"; each becomes the prefix template ``"<text>. {}"`` (braces in
the text replaced by spaces). Keys and values average over the bare prompt ``"{}"`` and these templates
(:func:`revive_plugin.editing.core.compute_keys`). Sampling is seeded; the texts are cached as JSON
under ``<cache>/context_templates/`` keyed by a fingerprint of the model's weights that leaves out the
parameters being edited (so a resumed run, whose edited weights differ, finds the texts sampled from
the unedited model).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .._io import CACHE_HINT, atomic_write_text, default_cache_dir

TEMPLATE_PROMPTS = ("The", "Therefore", "Because", "I", "You")
TEMPLATE_LENGTH = 10
TEMPLATE_TOP_K = 5
TEMPLATE_SEED = 0
FORMAT_VERSION = 1
_SAMPLE = 65536  # values per tensor that enter the fingerprint


def model_fingerprint(model, exclude=()) -> str:
    """BLAKE2b over the model's config and, per parameter not in ``exclude``, its name, dtype, shape and
    up to 65,536 evenly strided values (cheap for multi-billion-parameter models)."""
    h = hashlib.blake2b(digest_size=20)
    config = getattr(model, "config", None)
    h.update(str(getattr(config, "model_type", type(model).__name__)).encode())
    skip = set(exclude)
    for name, p in model.named_parameters():
        if name in skip:
            continue
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLE)
        sample = flat[::step][:_SAMPLE].to("cpu", torch.float32).contiguous()
        h.update(f"{name}|{p.dtype}|{tuple(p.shape)}|".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def generate_context_templates(model, tok, seed: int = TEMPLATE_SEED, prompts=TEMPLATE_PROMPTS,
                               length: int = TEMPLATE_LENGTH, top_k: int = TEMPLATE_TOP_K) -> list[str]:
    """``"<sampled text>. {}"`` per prompt (MEMIT's ``get_context_templates``), deterministic for ``seed``."""
    from ..evaluation.scoring import sample_generate

    was_training = model.training
    model.eval()
    try:
        texts = sample_generate(model, tok, list(prompts), max_out_len=length, top_k=top_k, seed=seed,
                                batch_size=len(prompts), progress=False)
    finally:
        model.train(was_training)
    return [t.replace("{", " ").replace("}", " ") + ". {}" for t in texts]


def _cache_path(root: Path, fingerprint: str, seed: int) -> Path:
    return root / "context_templates" / f"{fingerprint}-seed{seed}.json"


def cached_context_templates(model, tok, exclude=(), seed: int = TEMPLATE_SEED, cache_dir=None) -> list[str]:
    """The generated templates of ``model``, read from the JSON cache or sampled once and stored."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fp = model_fingerprint(model, exclude)
    path = _cache_path(root, fp, seed)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            data = None
        if (isinstance(data, dict) and data.get("format") == FORMAT_VERSION and data.get("fingerprint") == fp
                and isinstance(data.get("templates"), list) and all(isinstance(t, str) and "{}" in t
                                                                      for t in data["templates"])):
            return list(data["templates"])
    templates = generate_context_templates(model, tok, seed=seed)
    payload = {"format": FORMAT_VERSION, "fingerprint": fp, "seed": seed, "prompts": list(TEMPLATE_PROMPTS),
               "length": TEMPLATE_LENGTH, "top_k": TEMPLATE_TOP_K, "templates": templates}
    atomic_write_text(path, json.dumps(payload, indent=1), what="context templates", hint=CACHE_HINT)
    return templates
