"""Evaluation: CounterFact / ZsRE metrics, general ability, and the engine that runs them."""

from .counterfact import evaluate_counterfact
from .engine import compare, evaluate_all
from .general import KnowledgeProbe, glue_accuracy, perplexity, probe_candidates
from .zsre import evaluate_zsre

__all__ = [
    "KnowledgeProbe",
    "compare",
    "evaluate_all",
    "evaluate_counterfact",
    "evaluate_zsre",
    "glue_accuracy",
    "perplexity",
    "probe_candidates",
]
