"""CounterFact / ZsRE loaders: schema errors name the record and field."""

import json

import pytest

from revive_plugin.data.counterfact import load_counterfact, load_zsre, validate_counterfact, zsre_to_requests


def cf_record(case_id=0):
    return {
        "case_id": case_id,
        "pararel_idx": 2796,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "relation_id": "P103",
            "target_new": {"str": "English", "id": "Q1860"},
            "target_true": {"str": "French", "id": "Q150"},
            "subject": "Danielle Darrieux",
        },
        "paraphrase_prompts": ["Danielle Darrieux's mother tongue is"],
        "neighborhood_prompts": ["The mother tongue of Léon Blum is"],
        "attribute_prompts": ["J. R. R. Tolkien is a native speaker of"],
        "generation_prompts": ["Danielle Darrieux's mother tongue is"],
    }


def zsre_record():
    return {
        "subject": "Watts Humphrey",
        "src": "What university did Watts Humphrey attend?",
        "pred": "Trinity College",
        "rephrase": "What university did Watts Humphrey take part in?",
        "alt": "University of Michigan",
        "answers": ["Illinois Institute of Technology"],
        "loc": "nq question: who played desmond doss father in hacksaw ridge",
        "loc_ans": "Hugo Weaving",
        "cond": "Trinity College >> University of Michigan || What university did Watts Humphrey attend?",
    }


def write(tmp_path, data, name="x.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_real_format_loads(tmp_path):
    recs = load_counterfact(write(tmp_path, [cf_record(0), cf_record(1)]))
    assert len(recs) == 2
    z = load_zsre(write(tmp_path, [zsre_record()], "z.json"))
    req = zsre_to_requests(z)[0]["requested_rewrite"]
    assert req["prompt"] == "What university did {} attend?"
    # MEMIT and AlphaEdit edit (and score) ZsRE towards answers[0]; alt is the option
    assert req["target_new"]["str"] == "Illinois Institute of Technology"
    assert req["target_true"]["str"] == "University of Michigan"
    alt = zsre_to_requests(z, target="alt")[0]["requested_rewrite"]
    assert alt["target_new"]["str"] == "University of Michigan"
    with pytest.raises(ValueError, match="target"):
        zsre_to_requests(z, target="pred")


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda r: r["requested_rewrite"].pop("subject"), "'subject'"),
        (lambda r: r["requested_rewrite"]["target_new"].update(str=3), "requested_rewrite.target_new.str"),
        (lambda r: r["requested_rewrite"].update(prompt="no placeholder"), "requested_rewrite.prompt"),
        (lambda r: r.update(paraphrase_prompts="one"), "paraphrase_prompts"),
        (lambda r: r.update(neighborhood_prompts=["ok", 5]), "neighborhood_prompts[1]"),
        (lambda r: r.update(case_id="7"), "case_id"),
    ],
)
def test_malformed_counterfact_named(tmp_path, mutate, needle):
    bad = cf_record(41)
    mutate(bad)
    path = write(tmp_path, [cf_record(40), bad])
    with pytest.raises(ValueError) as e:
        load_counterfact(path)
    msg = str(e.value)
    assert "record 1" in msg and needle in msg and str(path) in msg


def test_duplicate_case_id_and_not_list(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        validate_counterfact([cf_record(3), cf_record(3)])
    with pytest.raises(ValueError, match="list"):
        load_counterfact(write(tmp_path, {"case_id": 0}))


@pytest.mark.parametrize("field", ["loc_ans", "alt", "answers", "rephrase"])
def test_malformed_zsre_named(tmp_path, field):
    bad = zsre_record()
    if field == "answers":
        bad[field] = []
    else:
        del bad[field]
    with pytest.raises(ValueError) as e:
        load_zsre(write(tmp_path, [zsre_record(), zsre_record(), bad]))
    assert "record 2" in str(e.value) and field in str(e.value)


def test_missing_and_invalid_json(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_counterfact(tmp_path / "nope.json")
    path = tmp_path / "bad.json"
    path.write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_zsre(path)
