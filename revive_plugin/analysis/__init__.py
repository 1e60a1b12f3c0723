"""Spectral analysis experiments of the paper's §2 (energy reconstruction, group perturbation,
subspace drift) with JSON output and plots. Submodules import transformers/matplotlib lazily."""

from revive_plugin.analysis.drift import drift_report, load_edited_weights
from revive_plugin.analysis.perturb import merge_perturbation_results, run_group_perturbation
from revive_plugin.analysis.reconstruct import run_reconstruction
from revive_plugin.analysis.targets import Target, resolve_targets

__all__ = [
    "Target",
    "drift_report",
    "load_edited_weights",
    "merge_perturbation_results",
    "resolve_targets",
    "run_group_perturbation",
    "run_reconstruction",
]
