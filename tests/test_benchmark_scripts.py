"""Every script under benchmarks/ runs end to end at smoke size on the bundled model (no timing asserts:
speed goals are printed by the scripts, measured in one run, never asserted here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def _run(script: str, *args: str) -> str:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)  # the checkout's package
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, PYTHONPATH=path))
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_projection_benchmark_quick():
    out = _run("bench_projection.py", "--quick", "--device", "cpu")
    assert out.count("speed-up per update") == 2 and "identical=True" in out


@pytest.mark.slow
def test_long_run_breakdown_smoke():
    out = _run("bench_long_run.py", "--rounds", "2", "--smoke")
    for stage in ("round: total edit", "target values", "state save", "checkpoint: edit evaluation",
                  "checkpoint: held-out PPL", "checkpoint: representation drift", "projected arm"):
        assert stage in out, stage
    rounds = out.split("\nrounds: ")[1].split(" s;")[0].split(", ")
    assert len(rounds) == 2  # one arm's two rounds, as one process of a long run
    assert "| round: total edit | " in out and "| 2 | 50 |" in out  # 2 rounds timed here, 50 in a 5000-edit arm


@pytest.mark.slow
def test_general_measures_smoke(glue_dir):
    out = _run("bench_general_measures.py", "--glue-dir", str(glue_dir), "--tasks", "sst2", "--shots", "0",
               "--n", "4", "--eps", "0,0.3", "--ppl-texts", "4", "--probe-n", "4", "--repr-n", "20")
    for row in ("| sst2 0-shot raw |", "| sst2 0-shot calibrated |", "| held-out PPL |", "| knowledge probe |",
                "| repr_cos |"):
        assert row in out, row


@pytest.mark.slow
def test_batched_values_smoke():
    out = _run("bench_batched_values.py", "--n", "2", "--steps", "1", "--prefixes", "1", "--stats-samples", "40")
    assert "batched, prefix-cached (default)" in out


@pytest.mark.slow
def test_revive_overhead_smoke():
    out = _run("bench_revive_overhead.py", "--rounds", "2", "--batch", "2", "--set", "v_num_grad_steps=2",
               "--set", "mom2_n_samples=40")
    assert "projection share of a REVIVE round" in out


@pytest.mark.slow
def test_delivery_diagnostic_smoke():
    out = _run("diag_delivery.py", "--n", "2", "--set", "v_num_grad_steps=2", "--set", "mom2_n_samples=40")
    assert out.count("removed) |") == 5  # one row per edit layer of the bundled model's MEMIT (layers 4–8)
    assert "| after the last write |" in out and "undelivered after the round: plain" in out
