"""A small CounterFact-style file of city → country edits, shared by the end-to-end bench tests."""

from __future__ import annotations

import json
from pathlib import Path

CITIES = [("Lyon", "France", "Peru"), ("Osaka", "Japan", "Chile"), ("Porto", "Portugal", "Kenya"),
          ("Bergen", "Norway", "Egypt"), ("Graz", "Austria", "Brazil"), ("Turku", "Finland", "Mexico"),
          ("Cork", "Ireland", "India"), ("Ghent", "Belgium", "Ghana"), ("Split", "Croatia", "Nepal"),
          ("Malmo", "Sweden", "Cuba")]


def write_city_facts(path: Path, n: int = len(CITIES)) -> str:
    """Write the first ``n`` records (each with a paraphrase, a neighbour and a generation prompt)."""
    cities = CITIES[:n]
    recs = [{"case_id": i, "requested_rewrite": {"prompt": "{} is located in the country of", "subject": c,
                                                  "target_new": {"str": new}, "target_true": {"str": true}},
             "paraphrase_prompts": [f"The city of {c} lies in the country of"],
             "neighborhood_prompts": [f"{cities[(i + 1) % n][0]} is located in the country of"],
             "neighborhood_targets": [cities[(i + 1) % n][1]],
             "generation_prompts": [f"{c} is known for"]}
            for i, (c, true, new) in enumerate(cities)]
    Path(path).write_text(json.dumps(recs))
    return str(path)
