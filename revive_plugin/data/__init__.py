"""Data: offline Wikipedia corpus, the generated fact set, CounterFact / ZsRE loaders."""

from .corpus import summary_for, wiki_texts
from .counterfact import load_counterfact, load_zsre, validate_counterfact, validate_zsre, zsre_to_requests
from .facts import build_facts, load_facts, relation_counts, write_facts

__all__ = [
    "build_facts",
    "load_counterfact",
    "load_facts",
    "load_zsre",
    "relation_counts",
    "summary_for",
    "validate_counterfact",
    "validate_zsre",
    "wiki_texts",
    "write_facts",
    "zsre_to_requests",
]
