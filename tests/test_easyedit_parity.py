"""Parity of REVIVE inside EasyEdit main with plain EasyEdit and with the native editor (small: 20 edits).

Runs benchmarks/easyedit_parity.py (MEMIT, 20 sequential edits in rounds of 10 on the bundled model;
EasyEdit main's BaseEditor and the native editor; plain and REVIVE) in a subprocess against the EasyEdit
source checkout named by ``EASYEDIT_SRC`` (skipped otherwise; EasyEdit main needs transformers 5.x).
Checks: REVIVE leaves no trace in the original dominant subspace (leakage ≤ 1e-5) while plain does;
REVIVE's efficacy through EasyEdit is within 10 points (2 of 20 edits) of plain EasyEdit and of the native
editor with REVIVE. Measured numbers are in docs/easyedit.md. EasyEdit's per-request value optimisation
dominates: ~10 minutes on 2 idle CPU cores, far more on a loaded machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def test_parity_through_easyedit_main(tmp_path, easyedit_src):
    src = easyedit_src
    out = tmp_path / "parity.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(REPO)]))
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "easyedit_parity.py"), "--easyedit-src", src,
                        "--methods", "MEMIT", "-n", "20", "-b", "10", "--work", str(tmp_path / "work"),
                        "--out", str(out)], env=env, capture_output=True, text=True, timeout=3600)
    print(r.stdout[-4000:])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    rows = {(x["host"], x["revive"]): x for x in json.loads(out.read_text())}
    for host in ("easyedit", "native"):
        assert rows[host, True]["leakage"] <= 1e-5
        assert rows[host, False]["leakage"] > 1e-3
    ee = rows["easyedit", True]["efficacy"]
    assert abs(ee - rows["easyedit", False]["efficacy"]) <= 0.10
    assert abs(ee - rows["native", True]["efficacy"]) <= 0.10
