"""Loaders and schema validation for CounterFact / MCF and ZsRE files.

Errors are ``ValueError`` naming the record (index and ``case_id`` where there is
one) and the field, e.g. ``record 12 (case_id 40): requested_rewrite.target_new.str:
expected a non-empty string, got int``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ZSRE_FIELDS = ("subject", "src", "rephrase", "alt", "answers", "loc", "loc_ans")


def _kind(x) -> str:
    return type(x).__name__


def _where(i: int, rec) -> str:
    if isinstance(rec, dict) and "case_id" in rec:
        return f"record {i} (case_id {rec['case_id']!r})"
    return f"record {i}"


def _need_str(where: str, field: str, value, allow_empty: bool = False) -> None:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        what = "a string" if allow_empty else "a non-empty string"
        raise ValueError(f"{where}: {field}: expected {what}, got {_kind(value)} {value!r:.60}")


def _need_str_list(where: str, field: str, value, min_len: int = 0) -> None:
    if not isinstance(value, list):
        raise ValueError(f"{where}: {field}: expected a list of strings, got {_kind(value)}")
    if len(value) < min_len:
        raise ValueError(f"{where}: {field}: expected at least {min_len} item(s), got {len(value)}")
    for j, v in enumerate(value):
        _need_str(where, f"{field}[{j}]", v)


def _need_key(where: str, rec: dict, field: str, prefix: str = ""):
    if field not in rec:
        raise ValueError(f"{where}: missing field {prefix}{field!r}")
    return rec[field]


def validate_counterfact_record(rec, index: int = 0) -> None:
    """Check one CounterFact/MCF record; raises ValueError naming the record and field."""
    where = _where(index, rec)
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {_kind(rec)}")
    case_id = _need_key(where, rec, "case_id")
    if not isinstance(case_id, int) or isinstance(case_id, bool):
        raise ValueError(f"{where}: case_id: expected an int, got {_kind(case_id)}")
    rw = _need_key(where, rec, "requested_rewrite")
    if not isinstance(rw, dict):
        raise ValueError(f"{where}: requested_rewrite: expected an object, got {_kind(rw)}")
    prompt = _need_key(where, rw, "prompt", "requested_rewrite.")
    _need_str(where, "requested_rewrite.prompt", prompt)
    if prompt.count("{}") != 1:
        raise ValueError(f"{where}: requested_rewrite.prompt: expected exactly one '{{}}' for the subject, got {prompt!r}")
    _need_str(where, "requested_rewrite.subject", _need_key(where, rw, "subject", "requested_rewrite."))
    if "relation_id" in rw:
        _need_str(where, "requested_rewrite.relation_id", rw["relation_id"])
    for t in ("target_new", "target_true"):
        target = _need_key(where, rw, t, "requested_rewrite.")
        if not isinstance(target, dict):
            raise ValueError(f"{where}: requested_rewrite.{t}: expected an object with 'str', got {_kind(target)}")
        _need_str(where, f"requested_rewrite.{t}.str", _need_key(where, target, "str", f"requested_rewrite.{t}."))
    if rw["target_new"]["str"].strip() == rw["target_true"]["str"].strip():
        raise ValueError(f"{where}: requested_rewrite.target_new.str equals target_true.str ({rw['target_new']['str']!r})")
    for field in ("paraphrase_prompts", "neighborhood_prompts"):
        _need_str_list(where, field, _need_key(where, rec, field))
    for field in ("attribute_prompts", "generation_prompts"):
        if field in rec:
            _need_str_list(where, field, rec[field])
    if "neighborhood_targets" in rec:
        _need_str_list(where, "neighborhood_targets", rec["neighborhood_targets"])
        if len(rec["neighborhood_targets"]) != len(rec["neighborhood_prompts"]):
            raise ValueError(
                f"{where}: neighborhood_targets: expected {len(rec['neighborhood_prompts'])} items "
                f"(one per neighborhood prompt), got {len(rec['neighborhood_targets'])}"
            )
    if "reference_text" in rec:
        _need_str(where, "reference_text", rec["reference_text"], allow_empty=True)


def validate_counterfact(records) -> list[dict]:
    """Validate a list of CounterFact records (unique case_ids); returns it unchanged."""
    if not isinstance(records, list):
        raise ValueError(f"CounterFact data: expected a JSON list of records, got {_kind(records)}")
    seen: dict[int, int] = {}
    for i, rec in enumerate(records):
        validate_counterfact_record(rec, i)
        cid = rec["case_id"]
        if cid in seen:
            raise ValueError(f"{_where(i, rec)}: case_id: duplicate of record {seen[cid]}")
        seen[cid] = i
    return records


def validate_zsre_record(rec, index: int = 0) -> None:
    """Check one ZsRE (zsre_mend_eval.json) record; raises ValueError naming the record and field."""
    where = f"record {index}"
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {_kind(rec)}")
    for field in ZSRE_FIELDS:
        value = _need_key(where, rec, field)
        if field == "answers":
            _need_str_list(where, field, value, min_len=1)
        else:
            _need_str(where, field, value)
    if rec["subject"] not in rec["src"]:
        raise ValueError(f"{where}: subject: {rec['subject']!r} does not occur in src {rec['src']!r}")


def validate_zsre(records) -> list[dict]:
    """Validate a list of ZsRE records; returns it unchanged."""
    if not isinstance(records, list):
        raise ValueError(f"ZsRE data: expected a JSON list of records, got {_kind(records)}")
    for i, rec in enumerate(records):
        validate_zsre_record(rec, i)
    return records


def _read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None


def _load_validated(path: str | os.PathLike, validate) -> list[dict]:
    data = _read_json(path)
    try:
        return validate(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def load_counterfact(path: str | os.PathLike) -> list[dict]:
    """Load counterfact.json / multi_counterfact.json (or our fact set) and validate it."""
    return _load_validated(path, validate_counterfact)


def load_zsre(path: str | os.PathLike) -> list[dict]:
    """Load zsre_mend_eval.json (or the train split) and validate it."""
    return _load_validated(path, validate_zsre)


ZSRE_TARGETS = ("answers", "alt")


def zsre_to_requests(records: list[dict], target: str = "answers") -> list[dict]:
    """ZsRE records as CounterFact-form edit requests.

    ``target="answers"`` (default, as MEMIT and AlphaEdit edit and score ZsRE): target_new = ``answers[0]``,
    and the record's ``alt`` is the competing target_true of the pairwise comparison; ``target="alt"``
    swaps the two. ``case_id`` is the record's index in the file; a record whose two strings coincide has
    no competing target and is left out.
    """
    if target not in ZSRE_TARGETS:
        raise ValueError(f"ZsRE target must be one of {list(ZSRE_TARGETS)}, got {target!r}")
    out = []
    for i, rec in enumerate(records):
        validate_zsre_record(rec, i)
        answer, alt = rec["answers"][0], rec["alt"]
        if answer.strip() == alt.strip():
            continue
        new, true = (answer, alt) if target == "answers" else (alt, answer)
        out.append(
            {
                "case_id": i,
                "requested_rewrite": {
                    "prompt": rec["src"].replace(rec["subject"], "{}", 1),
                    "subject": rec["subject"],
                    "target_new": {"str": new},
                    "target_true": {"str": true},
                },
            }
        )
    return out
