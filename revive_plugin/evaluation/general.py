"""General ability (paper §4.2, Appendix E.5): GLUE-style few-shot accuracy,
held-out perplexity, and a zero-shot probe of facts the unedited model knew.

GLUE-style subsets are JSON-lines files (sst2, mrpc, rte, cola, nli, mmlu) read
from a folder given as argument or by ``$REVIVE_GLUE_DIR``; :func:`resolve_glue_dir`
falls back to GLUE's validation splits from Hugging Face ``datasets`` when it is
installed and online.  Each item is a short few-shot prompt; the prediction is the
label word whose first token has the highest log-probability at the last position
(one batched forward).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import random
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from tqdm.auto import tqdm

from .metrics import perplexity_from_nll
from .._util import budget_batches, model_device, pad_batch, pad_id
from .scoring import encode_targets, next_token_logprobs, score_continuations

GLUE_TASKS = ("sst2", "mrpc", "rte", "cola", "nli", "mmlu", "sentiment_analysis")
#: tasks whose validation split ``datasets`` can fetch from the GLUE benchmark (``nyu-mll/glue``)
HF_GLUE_TASKS = ("sst2", "mrpc", "rte", "cola")
HF_GLUE_REPO = "nyu-mll/glue"
_OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
log = logging.getLogger(__name__)
MAX_WORDS = 60


def _clip(text: str, n: int = MAX_WORDS) -> str:
    words = str(text).split()
    return " ".join(words[:n]) + (" ..." if len(words) > n else "")


@dataclass(frozen=True)
class GlueTask:
    """How one task becomes prompts: item -> (text before the answer, gold label index), and label words."""

    labels: tuple[str, ...]
    render: Callable[[dict], str]
    gold: Callable[[dict], int]


def _pair(a: str, b: str, question: str) -> Callable[[dict], str]:
    return lambda r: f"{_clip(r[a])}\nQuestion: {_clip(r[b])} {question}\nAnswer:"


TASKS: dict[str, GlueTask] = {
    "sst2": GlueTask((" negative", " positive"), lambda r: f"Review: {_clip(r['sentence'])}\nSentiment:", lambda r: int(r["label"])),
    "mrpc": GlueTask(
        (" no", " yes"),
        lambda r: f"Sentence 1: {_clip(r['sentence1'])}\nSentence 2: {_clip(r['sentence2'])}\nSame meaning?",
        lambda r: int(r["label"]),
    ),
    "rte": GlueTask((" True", " False"), _pair("sentence1", "sentence2", "True or False?"), lambda r: int(r["label"])),
    "cola": GlueTask((" no", " yes"), lambda r: f"Sentence: {_clip(r['sentence'])}\nGrammatical?", lambda r: int(r["label"])),
    "nli": GlueTask(
        (" True", " False"),
        _pair("sentence1", "sentence2", "True or False?"),
        lambda r: {"entailment": 0, "not_entailment": 1}[r["label"]],
    ),
    "sentiment_analysis": GlueTask((" negative", " positive"), lambda r: f"Review: {_clip(r['sentence'])}\nSentiment:",
                                   lambda r: int(r["label"])),
    "mmlu": GlueTask(
        (" A", " B", " C", " D"),
        lambda r: "Question: "
        + _clip(r["question"], 80)
        + "".join(f"\n{c}. {_clip(x, 20)}" for c, x in zip("ABCD", r["choices"]))
        + "\nAnswer:",
        lambda r: int(r["answer"]),
    ),
}


def glue_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of GLUE-style subsets: ``data_dir``, else ``$REVIVE_GLUE_DIR``."""
    path = data_dir if data_dir is not None else os.environ.get("REVIVE_GLUE_DIR")
    if path is None:
        raise FileNotFoundError("no GLUE-style data folder: pass data_dir or set REVIVE_GLUE_DIR")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"GLUE-style data folder not found: {path}")
    return path


def _hf_online(timeout: float = 3.0) -> bool:
    """False when an HF offline variable is set or the hub does not answer within ``timeout`` seconds."""
    if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    reached: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)  # name resolution ignores the socket timeout
    t.start()
    t.join(timeout + 1.0)
    return bool(reached)


def _export_hf_glue(tasks: tuple[str, ...], folder: Path) -> None:
    """Write GLUE's validation split of each task to ``<folder>/<task>.jsonl`` (atomically, once)."""
    import datasets

    from .. import _io

    for task in tasks:
        path = folder / f"{task}.jsonl"
        with _io.file_lock(path, what="GLUE data", hint=_io.CACHE_HINT):
            if path.is_file():
                continue
            rows = datasets.load_dataset(HF_GLUE_REPO, task, split="validation")
            text = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows)
            _io.atomic_write_text(path, text, what="GLUE data", hint=_io.CACHE_HINT)


def resolve_glue_dir(data_dir: str | os.PathLike | None = None, tasks: tuple[str, ...] = HF_GLUE_TASKS,
                     cache_dir: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """``(folder, note)``: where general-ability data comes from, or ``(None, why it is skipped)``.

    ``data_dir`` (e.g. ``--glue-dir``), else ``$REVIVE_GLUE_DIR`` (both must exist), else GLUE's
    validation splits exported once from Hugging Face ``datasets`` to ``<cache>/data/glue-hf`` (used
    offline once there; fetched only when ``datasets`` is importable and the hub answers).
    """
    if data_dir is not None or os.environ.get("REVIVE_GLUE_DIR"):
        path = glue_dir(data_dir)
        return path, f"GLUE-style data from {path}"
    from ..cache import default_cache_dir

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "data" / "glue-hf"
    tasks = tuple(tasks)
    how = ("give --glue-dir DIR or set REVIVE_GLUE_DIR to a folder of <task>.jsonl files"
           f", or install `datasets` and go online for GLUE's validation splits of {', '.join(HF_GLUE_TASKS)}")
    if all((folder / f"{t}.jsonl").is_file() for t in tasks):
        return folder, f"GLUE validation splits from {folder}"
    unavailable = [t for t in tasks if t not in HF_GLUE_TASKS]
    if unavailable:
        reason = f"{', '.join(unavailable)} not in GLUE on Hugging Face"
    elif importlib.util.find_spec("datasets") is None:
        reason = "no data folder and `datasets` is not installed"
    elif not _hf_online():
        reason = "no data folder and Hugging Face is offline"
    else:
        try:
            _export_hf_glue(tasks, folder)
            return folder, f"GLUE validation splits from Hugging Face, saved in {folder}"
        except Exception as e:  # hub errors, missing configs, network drops: report and go on without
            reason = f"loading GLUE from Hugging Face failed ({type(e).__name__}: {str(e)[:200]})"
    return None, f"general ability: GLUE-style accuracy skipped ({reason}); {how}"


def load_glue_task(task: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Rows of ``<data_dir>/<task>.jsonl``, checked to render and carry a valid label."""
    if task not in TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of {tuple(TASKS)}")
    path = glue_dir(data_dir) / f"{task}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"GLUE task file not found: {path}")
    spec, rows = TASKS[task], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                spec.render(row)
                label = spec.gold(row)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{line_no}: malformed {task} row ({type(e).__name__}: {e})") from None
            if not 0 <= label < len(spec.labels):
                raise ValueError(f"{path}:{line_no}: label {label} out of range for {task}")
            rows.append(row)
    return rows


def _demos(rows: list[dict], spec: GlueTask, shots: int, rng: random.Random) -> list[int]:
    """Indices of demonstrations, cycling through the labels so each appears."""
    by_label: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_label.setdefault(spec.gold(r), []).append(i)
    for idx in by_label.values():
        rng.shuffle(idx)
    labels = sorted(by_label)
    picked = [by_label[labels[k % len(labels)]][k // len(labels)] for k in range(shots)]
    rng.shuffle(picked)
    return picked


def _content_free(row: dict) -> dict:
    """The row with every text replaced by "N/A" (contextual calibration, Zhao et al. 2021)."""
    return {k: (["N/A"] * len(v) if isinstance(v, list) else "N/A" if isinstance(v, str) else v) for k, v in row.items()}


def glue_prompts(task: str, rows: list[dict], n_per_task: int | None, shots: int, seed: int,
                 content_free: bool = False) -> tuple[list[str], list[int]]:
    """Few-shot prompts and gold label indices for a seeded sample of ``n_per_task`` rows
    (``content_free``: also the one content-free prompt with the same demonstrations, last)."""
    spec = TASKS[task]
    rng = random.Random(f"{seed}:{task}")
    demo_idx = _demos(rows, spec, shots, rng)
    prefix = "".join(spec.render(rows[i]) + spec.labels[spec.gold(rows[i])] + "\n\n" for i in demo_idx)
    pool = [i for i in range(len(rows)) if i not in set(demo_idx)]
    rng.shuffle(pool)
    items = pool if n_per_task is None else pool[:n_per_task]
    prompts, gold = [prefix + spec.render(rows[i]) for i in items], [spec.gold(rows[i]) for i in items]
    if content_free:
        prompts.append(prefix + spec.render(_content_free(rows[items[0] if items else 0])))
    return prompts, gold


def glue_accuracy(
    model,
    tok,
    data_dir: str | os.PathLike | None = None,
    tasks: tuple[str, ...] = GLUE_TASKS,
    n_per_task: int | None = 100,
    shots: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    calibrate: bool = False,
) -> dict:
    """Few-shot accuracy per task and their ``mean``; deterministic in ``seed``.

    ``calibrate``: contextual calibration — each label's log-probability is taken relative to
    its log-probability after a content-free input with the same demonstrations, which removes
    the label bias that keeps small models at chance on balanced sets."""
    out: dict[str, float] = {}
    for task in tqdm(tasks, desc="glue", disable=not progress, leave=False):
        rows = load_glue_task(task, data_dir)
        prompts, gold = glue_prompts(task, rows, n_per_task, shots, seed, content_free=calibrate)
        cand = [ids[0] for ids in encode_targets(tok, [w.strip() for w in TASKS[task].labels])]
        logp = next_token_logprobs(model, tok, prompts, cand, batch_size, progress, desc=task)
        if calibrate:
            logp = logp[:-1] - logp[-1:]
        pred = logp.argmax(-1).tolist()
        out[task] = sum(p == g for p, g in zip(pred, gold)) / max(1, len(gold))
    out["mean"] = sum(out[t] for t in tasks) / max(1, len(tasks))
    return out


@torch.inference_mode()
def perplexity(model, tok, texts: list[str], batch_size: int = 8, max_length: int = 256, progress: bool = True,
               logits_budget: int = 2**29) -> float:
    """Token-level perplexity of ``texts`` (each truncated to ``max_length`` tokens).

    Batches hold at most ``batch_size`` texts and about ``logits_budget`` bytes of float32 logits (from the
    config's ``vocab_size``), so a large vocabulary (Gemma's 262,144 tokens: 268 MB per 256-token text) does
    not multiply the memory: 32 such texts at once held 14.7 GB."""
    if not texts:
        raise ValueError("perplexity needs at least one text")
    enc = [ids[:max_length] for ids in tok(list(texts))["input_ids"]]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    device, pad = model_device(model), pad_id(tok)
    total, count = 0.0, 0
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 1
    batches = list(budget_batches(order, lambda i: len(enc[i]), max(1, logits_budget // (4 * vocab)), batch_size))
    for batch in tqdm(batches, desc="perplexity", disable=not progress, leave=False):
        seqs = [enc[i] for i in batch if len(enc[i]) > 1]
        if not seqs:
            continue
        ids, mask = pad_batch(seqs, pad, device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total += float(torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"))
        count += int((labels != -100).sum())
    return perplexity_from_nll(total, count)


def lm_eval_tasks(model, tok, tasks: tuple[str, ...] = ("hellaswag",), limit: int | None = 100, batch_size: int = 8) -> dict:
    """Optional lm-evaluation-harness tasks; ``{"skipped": reason}`` when it or its data is unavailable."""
    if importlib.util.find_spec("lm_eval") is None:
        return {"skipped": "lm-evaluation-harness is not installed (pip install lm-eval)"}
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM

        res = simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size),
                              tasks=list(tasks), limit=limit)
    except Exception as e:  # data sets missing offline, task names unknown, ...
        return {"skipped": f"lm-evaluation-harness could not run {list(tasks)}: {type(e).__name__}: {e}"}
    return {t: {k: v for k, v in r.items() if isinstance(v, (int, float))} for t, r in res["results"].items()}


def probe_candidates(records: list[dict], exclude_case_ids=()) -> list[dict]:
    """(prompt, target) facts from CounterFact records' true objects, skipping ``exclude_case_ids``."""
    skip = set(exclude_case_ids)
    out = []
    for r in records:
        if r.get("case_id") in skip:
            continue
        rw = r["requested_rewrite"]
        out.append({"prompt": rw["prompt"].format(rw["subject"]), "target": rw["target_true"]["str"]})
    return out


class KnowledgeProbe:
    """Zero-shot facts the unedited model answers correctly (greedy: every target token top-1).

    Built once on the unedited model with :meth:`build`; :meth:`score` is the
    fraction still answered correctly after editing.
    """

    def __init__(self, facts: list[dict]):
        for i, f in enumerate(facts):
            if not isinstance(f, dict) or not isinstance(f.get("prompt"), str) or not isinstance(f.get("target"), str):
                raise ValueError(f"probe fact {i}: expected {{'prompt': str, 'target': str}}, got {f!r:.80}")
        self.facts = [{"prompt": f["prompt"], "target": f["target"]} for f in facts]

    @classmethod
    def build(cls, model, tok, candidates: list[dict], max_facts: int = 200, batch_size: int = 64,
              chunk: int = 512, progress: bool = True) -> "KnowledgeProbe":
        """Keep up to ``max_facts`` candidates the model answers exactly, scanning in order."""
        kept: list[dict] = []
        for start in range(0, len(candidates), chunk):
            part = candidates[start : start + chunk]
            scores = score_continuations(model, tok, [c["prompt"] for c in part], [c["target"] for c in part],
                                         batch_size, progress, "probe build")
            kept += [c for c, s in zip(part, scores) if s.exact]
            if len(kept) >= max_facts:
                break
        return cls(kept[:max_facts])

    def score(self, model, tok, batch_size: int = 64, progress: bool = True) -> float:
        """Fraction of probe facts still answered exactly (``nan`` for an empty probe)."""
        if not self.facts:
            return math.nan
        scores = score_continuations(model, tok, [f["prompt"] for f in self.facts], [f["target"] for f in self.facts],
                                     batch_size, progress, "probe")
        return sum(s.exact for s in scores) / len(scores)

    def __len__(self) -> int:
        return len(self.facts)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"facts": [dict(f) for f in self.facts]}

    @classmethod
    def from_dict(cls, data: dict) -> "KnowledgeProbe":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, dict) or not isinstance(data.get("facts"), list):
            raise ValueError("KnowledgeProbe.from_dict: expected {'facts': [...]} ")
        return cls(data["facts"])
