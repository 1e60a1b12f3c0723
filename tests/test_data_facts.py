"""The generated fact set: deterministic, schema-valid, counts as documented."""

import hashlib
import re
from pathlib import Path

import pytest

from revive_plugin.data import facts as F
from revive_plugin.data.counterfact import load_counterfact, validate_counterfact

CARD = Path(__file__).resolve().parents[1] / "docs" / "factset.md"


@pytest.fixture(scope="module")
def records():
    return F.build_facts(0)


def test_same_seed_same_bytes(records, tmp_path):
    a = F.write_facts(tmp_path / "a.json", 0).read_bytes()
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(F.dumps_facts(F.build_facts(0))).hexdigest()
    assert load_counterfact(tmp_path / "a.json") == records


def test_other_seed_other_targets(records):
    other = F.build_facts(1)
    assert F.relation_counts(other) == F.relation_counts(records)
    assert [r["requested_rewrite"]["target_new"] for r in other] != [r["requested_rewrite"]["target_new"] for r in records]


def test_every_record_valid_and_rich(records):
    validate_counterfact(records)
    assert len(records) >= 10_000
    keys = {(r["requested_rewrite"]["relation_id"], r["requested_rewrite"]["subject"]) for r in records}
    assert len(keys) == len(records)
    for i, r in enumerate(records):
        rw = r["requested_rewrite"]
        assert r["case_id"] == i
        assert len(r["paraphrase_prompts"]) >= 2
        assert len(r["neighborhood_prompts"]) >= 5
        assert len(r["generation_prompts"]) >= 2
        assert rw["target_new"]["str"] != rw["target_true"]["str"]
        own = {t.format(rw["subject"]) for t in F.RELATIONS[rw["relation_id"]].templates}
        assert own.isdisjoint(r["neighborhood_prompts"])
        assert rw["prompt"].format(rw["subject"]) not in r["paraphrase_prompts"]
        assert rw["target_new"]["str"] not in r["neighborhood_targets"]
    with_ref = sum(bool(r["reference_text"]) for r in records)
    assert with_ref > 0.7 * len(records)


def test_counts_match_data_card(records):
    table = dict(re.findall(r"^\|\s*(P\d+)\s*\|[^|]*\|\s*(\d+)\s*\|", CARD.read_text(), flags=re.M))
    assert {k: int(v) for k, v in table.items()} == F.relation_counts(records)
    total = re.search(r"\*\*total\*\*[\s|]*\*\*(\d+)\*\*", CARD.read_text())
    assert total and int(total.group(1)) == len(records)


def test_load_facts_default_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("REVIVE_CACHE_DIR", str(tmp_path))
    path = F.default_facts_path(0)
    assert str(path).startswith(str(tmp_path))
    first = F.load_facts()
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    assert F.load_facts() == first
    assert path.stat().st_mtime_ns == mtime


def test_bad_seed_type():
    with pytest.raises(TypeError):
        F.build_facts("0")
