"""Worker processes for the cache tests: a tiny random Llama and a word tokenizer (no downloads, no
bundled model), run as ``python tests/cache_workers.py COMMAND ARGS`` so tests can kill them or race them.

Commands:
  cov STATS_DIR SAVE_EVERY_BATCHES DELAY   one covariance pass (DELAY seconds per text tokenised)
  all CACHE_DIR BARRIER_DIR INDEX OUT      wait for the other worker, then fill one cache folder (covariance,
                                           bases, fact set, converted model) and write digests + counts to OUT
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zlib
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
LAYERS = ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
TEXTS = [f"text {i}: the {w} of {c} is known to many people in {c} and far away"
         for i, (w, c) in enumerate(zip(["river", "music", "food", "history", "law"] * 60,
                                        ["Peru", "Chad", "Fiji", "Laos", "Iran", "Cuba"] * 50))]
COV_KW = dict(model_name="org/tiny", n_samples=len(TEXTS), max_tokens=16, batch_tokens=64)


class WordTok:
    """Maps words to ids by CRC32 (the same in every process); BOS = 1, pad = 0."""

    pad_token_id = 0

    def __init__(self, vocab: int = 97, delay: float = 0.0):
        self.vocab, self.delay = vocab, delay

    def __call__(self, text, add_special_tokens=True, truncation=True, max_length=None):
        if self.delay:
            time.sleep(self.delay)
        ids = [1] + [2 + zlib.crc32(w.encode()) % (self.vocab - 2) for w in text.split()]
        return {"input_ids": ids[:max_length] if truncation and max_length else ids}


def tiny_model():
    from tiny_edits import tiny_llama

    return tiny_llama(vocab_size=97, num_hidden_layers=2)


def cov(stats_dir: str, save_every_batches: str, delay: str) -> None:
    from revive_plugin.editing import covariance as cv

    every = int(save_every_batches) or None
    paths = cv.ensure_stats(tiny_model(), WordTok(delay=float(delay)), LAYERS, stats_dir, texts=TEXTS,
                            progress=False, save_every_batches=every, **COV_KW)
    print(json.dumps({k: str(v) for k, v in paths.items()}))


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _barrier(folder: Path, index: str, n: int = 2, timeout: float = 120.0) -> None:
    (folder / f"ready-{index}").touch()
    end = time.monotonic() + timeout
    while len(list(folder.glob("ready-*"))) < n:
        if time.monotonic() > end:
            raise TimeoutError("the other worker never started")
        time.sleep(0.01)


def fill_cache(cache_dir: str, barrier_dir: str, index: str, out: str) -> None:
    """Everything a bench run caches, with the expensive steps slowed down and counted."""
    os.environ["REVIVE_CACHE_DIR"] = cache_dir
    os.environ["REVIVE_MODEL_CACHE"] = str(Path(cache_dir) / "models")
    from revive_plugin import models
    from revive_plugin.cache import BasisCache
    from revive_plugin.data import facts
    from revive_plugin.editing import covariance as cv

    sys.path.insert(0, str(HERE))
    from city_facts import write_city_facts

    counts = {"covariance": 0, "basis": 0, "facts": 0, "model": 0}

    def slow(kind, fn):
        def wrapped(*a, **kw):
            counts[kind] += 1
            time.sleep(1.0)  # keep the other worker waiting on the lock, not finding a finished file
            return fn(*a, **kw)
        return wrapped

    cv.collect_second_moments = slow("covariance", cv.collect_second_moments)

    class SlowBasisCache(BasisCache):
        def _compute(self, weight, tau):
            counts["basis"] += 1
            time.sleep(0.5)
            return super()._compute(weight, tau)

    def build(seed):
        path = Path(out).with_suffix(".facts.json")
        return json.loads(Path(write_city_facts(path)).read_text())

    facts.build_facts = slow("facts", build)
    models.BUNDLED["tiny"] = models.BundledModel("tiny", lambda: Path(__file__), "test model")
    models._convert_gguf = slow("model", lambda gguf, dest: tiny_model().save_pretrained(dest))

    model = tiny_model()
    _barrier(Path(barrier_dir), index)
    digests = {}
    paths = cv.ensure_stats(model, WordTok(), LAYERS, Path(cache_dir) / "stats", texts=TEXTS, progress=False,
                            **COV_KW)
    digests["covariance"] = _digest(cv.load_stats(paths[name])[0] for name in LAYERS)
    cache = SlowBasisCache()
    bases = [cache.get(model.get_submodule(name).weight, 0.1) for name in LAYERS]
    digests["basis"] = _digest(t for b in bases for t in (b.U, b.V, b.singular_values))
    digests["facts"] = hashlib.sha256(json.dumps(facts.load_facts()).encode()).hexdigest()
    from transformers import AutoModelForCausalLM

    folder = models.bundled_model_dir("tiny")
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    digests["model"] = _digest(loaded.state_dict().values())
    Path(out).write_text(json.dumps({"counts": counts, "digests": digests}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, *args = sys.argv[1:]
    {"cov": cov, "all": fill_cache}[cmd](*args)
