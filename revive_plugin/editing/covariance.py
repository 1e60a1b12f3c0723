"""Second moment C = E[k kᵀ] of FFN-output-matrix inputs, streamed from local text, in EasyEdit's cache layout.

File: ``stats_dir/<model>/<dataset>_stats/<layer_name>_<dtype>_mom2_<n>.npz`` with keys
``mom2.mom2`` (Σ k kᵀ, in ``dtype``), ``mom2.count`` (number of tokens), ``mom2.constructor``
(the EasyEdit class string) and ``sample_size`` (n, the number of texts asked for) — the layout that
EasyEdit main's ``layer_stats``/``runningstats.tally`` write and read, so EasyEdit's own MEMIT/AlphaEdit
find the file and never download. ``<model>`` defaults, as in EasyEdit main, to the last path component of
``model.config._name_or_path``.

Texts are tokenised one by one, truncated to ``max_tokens`` and packed into batches of at most
``batch_tokens`` tokens, so peak memory depends on those caps, never on the corpus size.

A long pass saves its running float64 sums, token count and number of batches done (safetensors,
atomically; every ``save_every_s`` seconds of work by default) next to the statistics; a pass that
was killed continues after the last saved batch, in the same order, so its result is bit-identical
to an uninterrupted pass. Processes sharing ``stats_dir`` run each pass once: the others wait on its
lock files, then read the finished statistics.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from .. import _io, nethook
from .._util import budget_batches, model_device, pad_batch, pad_id
from ..cache import read_safetensors_metadata, weight_fingerprint
from ..data.corpus import wiki_texts

EASYEDIT_CONSTRUCTOR = "easyeditor.util.runningstats.SecondMoment()"
PARTIAL_FORMAT = "revive-plugin/covariance-partial/1"
DEFAULT_SAVE_EVERY_S = 300.0
log = logging.getLogger(__name__)


def stats_model_dir(model_name: str) -> str:
    """The statistics folder of a model name or path, as EasyEdit main names it: its last path component."""
    return model_name.rstrip("/").rsplit("/", 1)[-1]


def default_model_name(model) -> str:
    """EasyEdit main's stats folder name: the last path component of ``config._name_or_path``."""
    return stats_model_dir(str(getattr(model.config, "_name_or_path", "") or "model")) or "model"


def stats_path(stats_dir, model_name: str, layer_name: str, dtype: str = "float32",
               n_samples: int | None = None, mom2_dataset: str = "wikipedia") -> Path:
    """Path of the cached statistics file (EasyEdit layout)."""
    suffix = "" if n_samples is None else f"_{int(n_samples)}"
    return Path(stats_dir) / stats_model_dir(model_name) / f"{mom2_dataset}_stats" / f"{layer_name}_{dtype}_mom2{suffix}.npz"


def default_texts(n: int | None = None) -> list[str]:
    """Covariance corpus: ``revive_plugin.data.corpus.wiki_texts("covariance")``."""
    return list(wiki_texts("covariance", n=n))


def texts_from_file(path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (one text per line)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file not found: {p}")
    with open(p, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def _token_ids(tok, texts: Iterable[str], max_tokens: int) -> Iterator[list[int]]:
    for text in texts:
        ids = tok(text, add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]
        if ids:
            yield ids


class PassCheckpoint:
    """Partial progress of one covariance pass: the running float64 sums, the token count and the
    number of batches done, in one safetensors file written atomically.

    ``key`` identifies the pass (model, layers, corpus, caps); a file with another key, or an
    unreadable one, is ignored with a warning. Saved after ``save_every_batches`` batches when given,
    else after ``save_every_s`` seconds of work — stretched to ten times the last save's duration so
    saving huge sums never takes more than a tenth of the pass.
    """

    def __init__(self, path, key: str, save_every_s: float = DEFAULT_SAVE_EVERY_S,
                 save_every_batches: int | None = None):
        if save_every_batches is not None and save_every_batches <= 0:
            raise ValueError(f"save_every_batches must be > 0, got {save_every_batches}")
        if save_every_s <= 0:
            raise ValueError(f"save_every_s must be > 0, got {save_every_s}")
        self.path = Path(path)
        self.key = key
        self.save_every_s = float(save_every_s)
        self.save_every_batches = save_every_batches
        self._last_batches = 0
        self._last_time = time.monotonic()
        self._interval = self.save_every_s

    def load(self, layer_names: Sequence[str]) -> tuple[dict[str, torch.Tensor], int, int] | None:
        """``(sums, count, batches_done)`` of a matching saved pass, or None."""
        if not self.path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            meta = read_safetensors_metadata(self.path)
            problem = None if meta.get("format") == PARTIAL_FORMAT and meta.get("key") == self.key \
                else "it belongs to another pass"
            if problem is None:
                sums = load_file(str(self.path))
                count, done = int(meta["count"]), int(meta["batches"])
                if set(sums) != set(layer_names) or any(t.dtype != torch.float64 for t in sums.values()):
                    problem = "its layers or dtypes do not match"
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
            problem = f"unreadable ({type(e).__name__}: {e})"
        if problem is not None:
            log.warning("ignoring covariance progress file %s: %s; starting the pass from the beginning",
                        self.path, problem)
            return None
        self._last_batches = done
        return sums, count, done

    def step(self, sums: dict[str, torch.Tensor], count: int, batches_done: int) -> None:
        """Save when due (after a batch)."""
        if self.save_every_batches is not None:
            due = batches_done - self._last_batches >= self.save_every_batches
        else:
            due = time.monotonic() - self._last_time >= self._interval
        if due:
            self.save(sums, count, batches_done)

    def save(self, sums: dict[str, torch.Tensor], count: int, batches_done: int) -> None:
        start = time.monotonic()
        meta = {"format": PARTIAL_FORMAT, "key": self.key, "count": str(int(count)), "batches": str(int(batches_done))}
        _io.atomic_save_safetensors(sums, self.path, meta, what="covariance progress", hint=_io.CACHE_HINT)
        now = time.monotonic()
        self._interval = max(self.save_every_s, 10.0 * (now - start))
        self._last_time, self._last_batches = now, batches_done

    def remove(self) -> None:
        """Delete the progress file and any temporary copy a killed save left (the pass holds the locks of
        its statistics files, so no other process writes this progress file)."""
        self.path.unlink(missing_ok=True)
        _io.remove_orphan_temps(self.path)


@torch.no_grad()
def collect_second_moments(model, tok, layer_names: Sequence[str], texts: Iterable[str],
                           max_tokens: int = 128, batch_tokens: int = 4096, total: int | None = None,
                           progress: bool = True, checkpoint: PassCheckpoint | None = None,
                           ) -> dict[str, tuple[torch.Tensor, int]]:
    """Σ k kᵀ (float64, on the model's device) and token count for the inputs of each module in
    ``layer_names``, one forward per batch that stops after the deepest of them. With a
    ``checkpoint``, progress is saved as the pass goes and a saved pass continues where it stopped."""
    if max_tokens <= 0 or batch_tokens < max_tokens:
        raise ValueError(f"need 0 < max_tokens <= batch_tokens, got {max_tokens}, {batch_tokens}")
    device = model_device(model)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    start = 0
    restored = checkpoint.load(layer_names) if checkpoint is not None else None
    if restored is not None:
        sums = {name: t.to(device) for name, t in restored[0].items()}
        count, start = restored[1], restored[2]
        log.warning("resuming the covariance pass after batch %d (%d tokens) from %s", start, count, checkpoint.path)
    pad = pad_id(tok)
    was_training = model.training
    model.eval()
    bar = tqdm(total=total, desc="covariance", unit="text", disable=not progress)
    try:
        for i, batch in enumerate(budget_batches(_token_ids(tok, texts, max_tokens), len, batch_tokens)):
            if i < start:  # done before the interruption: same batches, same order
                bar.update(len(batch))
                continue
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
            if checkpoint is not None:
                checkpoint.step(sums, count, i + 1)
    finally:
        bar.close()
        model.train(was_training)
    if not sums:
        raise ValueError("no tokens in the covariance corpus")
    return {name: (sums[name], count) for name in layer_names}


def save_stats(path, mom2_sum: torch.Tensor, count: int, n_samples: int | None, dtype: str = "float32") -> Path:
    """Write one layer's statistics in EasyEdit's npz layout (atomic replace)."""
    path = Path(path)
    data = {
        "mom2.constructor": np.array(EASYEDIT_CONSTRUCTOR),
        "mom2.count": np.array(int(count)),
        "mom2.mom2": mom2_sum.detach().cpu().to(getattr(torch, dtype)).numpy(),
        # EasyEdit boxes None as a NaN; n is always given here.
        "sample_size": np.array(int(n_samples) if n_samples is not None else np.nan),
    }
    with _io.atomic_path(path, what="covariance statistics", hint=_io.CACHE_HINT) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **data)
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


def pass_key(model, layer_names: Sequence[str], texts: Sequence[str], **settings) -> str:
    """Identity of a covariance pass: the model (its input embedding's fingerprint), the layers, the
    exact corpus and the settings that shape the batches."""
    h = hashlib.sha256()
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    ident = weight_fingerprint(emb.weight) if emb is not None else type(model).__name__
    h.update(json.dumps({"model": ident, "layers": list(layer_names), **settings}, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def ensure_stats(model, tok, layer_names: Sequence[str], stats_dir, model_name: str | None = None,
                 mom2_dataset: str = "wikipedia", n_samples: int = 3000, dtype: str = "float32",
                 texts: Sequence[str] | None = None, max_tokens: int = 128, batch_tokens: int = 4096,
                 progress: bool = True, save_every_s: float = DEFAULT_SAVE_EVERY_S,
                 save_every_batches: int | None = None) -> dict[str, Path]:
    """Compute (one pass for all missing layers) and cache statistics; returns layer -> npz path.

    The pass holds the lock files of the layers it computes (another process asking for them waits,
    then reads them) and saves its progress (see :class:`PassCheckpoint`) to continue after a kill.
    """
    model_name = model_name or default_model_name(model)
    paths = {name: stats_path(stats_dir, model_name, name, dtype, n_samples, mom2_dataset) for name in layer_names}
    if all(p.is_file() for p in paths.values()):
        return paths
    with contextlib.ExitStack() as locks:
        for name in sorted(paths, key=lambda n: str(paths[n])):  # one global order: no deadlock
            if not paths[name].is_file():
                locks.enter_context(_io.file_lock(paths[name], what="covariance statistics", hint=_io.CACHE_HINT))
        missing = [name for name, p in paths.items() if not p.is_file()]  # others may have finished some
        if not missing:
            return paths
        if texts is None:
            texts = default_texts(n_samples)
        texts = list(texts)[:n_samples]
        if not texts:
            raise ValueError("covariance corpus is empty")
        key = pass_key(model, missing, texts, model_name=model_name, dataset=mom2_dataset, n=n_samples,
                       dtype=dtype, max_tokens=max_tokens, batch_tokens=batch_tokens)
        first = paths[missing[0]]
        checkpoint = PassCheckpoint(first.with_name(f"covariance-pass-{key[:16]}.partial.safetensors"), key,
                                    save_every_s, save_every_batches)
        log.info("covariance pass over %d texts for %s", len(texts), ", ".join(missing))
        stats = collect_second_moments(model, tok, missing, texts, max_tokens=max_tokens,
                                       batch_tokens=batch_tokens, total=len(texts), progress=progress,
                                       checkpoint=checkpoint)
        for name in missing:
            save_stats(paths[name], stats[name][0], stats[name][1], n_samples, dtype)
            _io.remove_orphan_temps(paths[name])  # under its lock: left by a writer killed mid-save
        checkpoint.remove()
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
