"""``--host easyedit``: the same rounds, run through EasyEdit's BaseEditor (sequential mode).

The BaseEditor is built around the already-loaded model (EasyEdit accepts ``(model, tok)`` as
``model_name``) after :mod:`revive_plugin.easyedit` has patched ``ALG_DICT`` (project methods
registered, REVIVE projection wrapped around ``apply_*`` when ``use_revive`` is on). Each round
calls the editor's ``apply_algo`` with ``copy=False`` and keeps the weights, as EasyEdit's
``sequential_edit=True`` does; the harness evaluates retention itself afterwards.
"""

from __future__ import annotations

from pathlib import Path


def require_easyedit():
    """Import EasyEdit's BaseEditor or raise a ValueError that says why and what to do."""
    try:
        from easyeditor import BaseEditor
    except Exception as exc:  # EasyEdit's import pulls many optional packages
        raise ValueError(
            f"--host easyedit needs EasyEdit importable, but 'import easyeditor' failed "
            f"({type(exc).__name__}: {exc}); install EasyEdit with its dependencies or use --host native"
        ) from None
    return BaseEditor


def _to_easyedit_request(rec: dict) -> dict:
    rw = rec.get("requested_rewrite", rec)
    subject = rw["subject"]
    prompt = rw["prompt"]
    new = rw["target_new"]["str"] if isinstance(rw["target_new"], dict) else rw["target_new"]
    true = rw.get("target_true", rw.get("ground_truth", ""))
    true = true["str"] if isinstance(true, dict) else true
    return {"case_id": rec.get("case_id"), "prompt": prompt.format(subject) if "{}" in prompt else prompt,
            "subject": subject, "target_new": new.strip(), "ground_truth": (true or "").strip()}


class EasyEditSequentialEditor:
    """Editor protocol (edit / edited_params / save / load) on top of EasyEdit's BaseEditor."""

    def __init__(self, method: str, model, tok, hparams):
        base_editor = require_easyedit()
        from revive_plugin import easyedit as bridge

        bridge.enable()
        self.method, self.model, self.tok = method, model, tok
        self.hparams = bridge.to_easyedit_hparams(method, hparams) if hasattr(bridge, "to_easyedit_hparams") \
            else hparams
        self.hparams.model_name = (model, tok)
        self.editor = base_editor.from_hparams(self.hparams)
        self.rounds = 0

    @property
    def edited_params(self) -> list[str]:
        tmp = self.hparams.rewrite_module_tmp
        return [f"{tmp.format(layer)}.weight" for layer in self.hparams.layers]

    def edit(self, requests: list[dict]) -> dict:
        reqs = [_to_easyedit_request(r) for r in requests]
        self.editor.apply_algo(self.model, self.tok, reqs, self.hparams, copy=False,
                               return_orig_weights=True, keep_original_weight=False)
        self.rounds += 1
        return {"n_requests": len(reqs), "host": "easyedit"}

    def save(self, directory) -> None:
        from revive_plugin import easyedit as bridge

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if hasattr(bridge, "save_state"):
            bridge.save_state(d)
        (d / "easyedit-host.txt").write_text(f"{self.method} rounds={self.rounds}\n", encoding="utf-8")

    def load(self, directory) -> None:
        from revive_plugin import easyedit as bridge

        if not hasattr(bridge, "load_state"):
            raise ValueError(f"resuming a --host easyedit run is not supported for {self.method}: "
                             "EasyEdit keeps the method's sequential state in module globals")
        bridge.load_state(Path(directory))
