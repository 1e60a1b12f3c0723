"""Offline Wikipedia splits are disjoint, deterministic and complete."""

import pytest

from revive_plugin.data import corpus


def test_splits_disjoint_and_cover_everything():
    cov = corpus.wiki_texts("covariance")
    held = corpus.wiki_texts("heldout")
    assert len(held) > 500 and len(cov) > 5 * len(held)
    assert not set(cov) & set(held)
    assert len(cov) + len(held) == len(corpus.summaries())


def test_deterministic_prefix_and_errors():
    assert corpus.wiki_texts("heldout", 5) == corpus.wiki_texts("heldout")[:5]
    assert corpus.wiki_texts("covariance", 0) == []
    with pytest.raises(ValueError, match="split"):
        corpus.wiki_texts("train")
    with pytest.raises(ValueError):
        corpus.wiki_texts("heldout", -1)


def test_summary_lookup():
    assert corpus.summary_for("No Such Title 123", "france").startswith("France")
    assert corpus.summary_for("No Such Title 123") is None
