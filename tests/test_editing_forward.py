"""The value-optimisation runners (revive_plugin.editing.forward): same numbers, less compute."""

from __future__ import annotations

import contextlib

import pytest
import torch

from revive_plugin._util import pad_batch, pad_id
from revive_plugin.editing import core, forward
from revive_plugin.editing.hparams import MEMITHyperParams

REQS = [
    {"prompt": "{} is located in", "subject": "Paris", "target_new": "Rome"},
    {"prompt": "The capital of {} is", "subject": "Spain", "target_new": "Oslo"},
    {"prompt": "{} plays", "subject": "Lionel Messi", "target_new": "baseball games"},
    {"prompt": "In the middle of the old town of {}, the river is called", "subject": "Bern",
     "target_new": "the Danube river"},
]


def _batch(tok):
    reqs = [core.normalize_request(r) for r in REQS]
    b = core._value_batch(tok, reqs, "subject_last", core.context_templates(2))
    ids, mask = pad_batch(b["seqs"], pad_id(tok), "cpu")
    return b, ids, mask, torch.tensor(b["look_pos"]), torch.tensor(b["look_req"])


def test_length_buckets_cover_rows_once_and_cut_padding():
    lengths = [1, 1, 1, 2, 9, 10, 10, 11, 30]
    parts = forward.length_buckets(lengths, overhead=2)
    assert [i for p in parts for i in range(len(lengths))[p]] == list(range(len(lengths)))
    padded = sum((p.stop - p.start) * lengths[p.stop - 1] for p in parts)
    assert len(parts) > 1 and padded < len(lengths) * max(lengths)
    assert forward.length_buckets([5] * 7) == [slice(0, 7)]  # equal lengths: one bucket
    assert forward.length_buckets([1, 50], overhead=10**6) == [slice(0, 2)]  # costly forwards: one bucket


def test_runners_agree_on_every_needed_position(small_model):
    model, tok = small_model
    b, ids, mask, look_pos, look_req = _batch(tok)
    delta = torch.randn(len(REQS), model.config.hidden_size) * 0.5
    outs = {}
    for mode in ("full", "truncated", "cached"):
        with contextlib.ExitStack() as stack:
            run, z = forward.make_runner(model, "model.layers.1", ids, mask, look_pos, look_req, stack, mode)
            rows = torch.tensor([0, 2, 3, 5, 7, len(ids) - 1])
            last = run(rows, delta)
            # every position the losses read: all target positions of the chosen rows
            pos = [p for r, p in zip(b["tgt_row"], b["tgt_pos"]) if r in rows.tolist()]
            row = [r for r in b["tgt_row"] if r in rows.tolist()]
            local = {r: i for i, r in enumerate(rows.tolist())}
            outs[mode] = torch.stack([last[local[r], p - int(run.offset[r])] for r, p in zip(row, pos)])
        assert z.shape == (len(ids), model.config.hidden_size)
    assert torch.allclose(outs["full"], outs["truncated"], atol=1e-5)
    assert torch.allclose(outs["full"], outs["cached"], atol=1e-5)
    # the cached runner really skips the prefix: its output is narrower than the padded batch
    with contextlib.ExitStack() as stack:
        run, _ = forward.make_runner(model, "model.layers.1", ids, mask, look_pos, look_req, stack, "cached")
        assert isinstance(run, forward.Verified)
        assert run(torch.arange(len(ids)), delta).shape[1] < ids.shape[1]
        assert run.runner is run.fast


def test_cached_runner_is_kept_in_bfloat16(small_model):
    model, tok = small_model
    model = model.to(torch.bfloat16)
    try:
        _, ids, mask, look_pos, look_req = _batch(tok)
        delta = torch.randn(len(REQS), model.config.hidden_size)
        with contextlib.ExitStack() as stack:
            run, z = forward.make_runner(model, "model.layers.1", ids, mask, look_pos, look_req, stack, "auto")
            out = run(torch.arange(len(ids)), delta)
            assert run.runner is run.fast and out.dtype == torch.bfloat16 and z.dtype == torch.float32
    finally:
        model.float()


def test_disagreeing_fast_runner_falls_back_with_a_warning(small_model):
    model, tok = small_model
    _, ids, mask, look_pos, look_req = _batch(tok)
    delta = torch.zeros(len(REQS), model.config.hidden_size)
    with contextlib.ExitStack() as stack:
        run, _ = forward.make_runner(model, "model.layers.1", ids, mask, look_pos, look_req, stack, "cached")
        good = run.fast
        wrong = lambda rows, d: good(rows, d) + 1.0  # noqa: E731
        wrong.offset, wrong.suffix_len = good.offset, good.suffix_len
        run.fast = wrong
        with pytest.warns(RuntimeWarning, match="prefix key/value caching is not usable"):
            out = run(torch.arange(len(ids)), delta)
        assert run.runner is run.reference and out.shape[1] == ids.shape[1]
        assert torch.equal(run.offset, torch.zeros_like(look_pos))


def test_bad_forward_mode_is_a_clear_error(small_model):
    model, tok = small_model
    _, ids, mask, look_pos, look_req = _batch(tok)
    with contextlib.ExitStack() as stack, pytest.raises(ValueError, match="unknown forward mode"):
        forward.make_runner(model, "model.layers.1", ids, mask, look_pos, look_req, stack, "fast")
    with contextlib.ExitStack() as stack, pytest.raises(ValueError, match="not available"):
        forward.make_runner(model, "model.layers.1.mlp", ids, mask, look_pos, look_req, stack, "cached")


def _spy_rows(monkeypatch) -> list[int]:
    seen: list[int] = []
    orig = forward.PrefixCachedForward.__call__

    def spy(self, rows, delta):
        seen.append(len(rows))
        return orig(self, rows, delta)

    monkeypatch.setattr(forward.PrefixCachedForward, "__call__", spy)
    return seen


def test_requests_converged_at_step_0_keep_delta_zero(small_model, monkeypatch):
    model, tok = small_model
    reqs = [core.normalize_request(r) for r in REQS[:3]]
    seen = _spy_rows(monkeypatch)
    hp = MEMITHyperParams(layers=[1], v_num_grad_steps=5, v_lr=0.5)
    z = core.compute_target_values(model, tok, reqs, hp, "model.layers.1", early_stop=1e9)
    assert len(seen) == 2 and seen[-1] == 7 * len(reqs)  # the check on a few rows, then one step
    _, cur = core.compute_keys(model, tok, reqs, ["model.layers.1.mlp.down_proj"], z_module="model.layers.1")
    assert torch.allclose(z, cur, atol=1e-5)


def test_converged_requests_leave_the_batch_others_follow_their_own_path(bundled_model, monkeypatch):
    """On the bundled model with ``early_stop=2`` one of three requests converges after a few steps: its
    rows leave the batch, and every request's value equals its value when optimised alone."""
    model, tok = bundled_model
    reqs = [core.normalize_request(r) for r in REQS[:3]]
    hp = MEMITHyperParams(layers=[4], v_num_grad_steps=6, v_lr=0.5)
    kw = dict(templates=core.context_templates(1), early_stop=2.0)
    alone = torch.cat([core.compute_target_values(model, tok, [r], hp, "model.layers.4", **kw) for r in reqs])
    seen = _spy_rows(monkeypatch)
    z = core.compute_target_values(model, tok, reqs, hp, "model.layers.4", **kw)
    assert seen[1] == 3 * len(reqs) and min(seen[1:]) < 3 * len(reqs), seen
    assert float((z - alone).norm() / alone.norm()) < 1e-4


def test_a_new_arch_table_row_takes_the_fast_forward(small_model, monkeypatch):
    """Adding an architecture is one ARCH_TABLE row: a model of the new type restarts after z (no full forward)."""
    from revive_plugin import arch

    model, tok = small_model
    _, ids, mask, look_pos, look_req = _batch(tok)
    monkeypatch.setitem(arch.ARCH_TABLE, "tiny_new_family", arch.ARCH_TABLE["llama"])
    monkeypatch.setattr(model.config, "model_type", "tiny_new_family")
    assert forward.z_block_index(model, "model.layers.1") == 1
    with contextlib.ExitStack() as stack:
        run, _ = forward.make_runner(model, "model.layers.1", ids, mask, look_pos, look_req, stack)
        assert not isinstance(run, forward.FullForward)
