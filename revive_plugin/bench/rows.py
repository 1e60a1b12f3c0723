"""Flat rows of benchmark records: what the CSV, the tables and the plots read."""

from __future__ import annotations

BASE_FIELDS = ["arm", "label", "method", "mode", "tau", "round", "edits", "final", "n_eval_records"]


def flatten(record: dict) -> dict:
    """One CSV row from a checkpoint (or baseline) JSON record."""
    row = {k: record.get(k) for k in BASE_FIELDS}
    for k, v in (record.get("edit") or {}).items():
        if _is_number(v):
            row[k] = v
    for k, v in (record.get("general") or {}).items():
        if _is_number(v):
            row[k] = v
    spec = record.get("spectral") or {}
    for k, v in (spec.get("mean") or {}).items():
        row[_spectral_name(k, "mean")] = v
    for k, v in (spec.get("worst") or {}).items():
        row[_spectral_name(k.removesuffix("_min"), "min")] = v
    for k, v in (record.get("timing") or {}).items():
        if _is_number(v):
            row[k] = v
    row["alarms"] = len(record.get("alarms") or [])
    return row


def _spectral_name(key: str, agg: str) -> str:
    short = {"ls": "ls", "ss_left_mean_max": "ss_left", "ss_right_mean_max": "ss_right",
             "norm_growth": "norm_growth"}.get(key, key)
    return f"{short}_{agg}"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
