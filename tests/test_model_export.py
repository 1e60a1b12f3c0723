"""``revive model export``: the bundled model in a folder EasyEdit main's BaseEditor can load by name."""

from __future__ import annotations

import os

import pytest


def test_export_writes_a_family_named_folder_and_prints_the_yaml_lines(tmp_path, capsys):
    from transformers import AutoConfig

    from revive_plugin.cli import main
    from revive_plugin.editing.covariance import default_model_name, stats_path

    assert main(["model", "export", "--family", "llama", str(tmp_path / "ee")]) == 0
    out = capsys.readouterr().out
    model_dir = tmp_path / "ee" / "smollm2-135m-llama"
    assert f"model_name: {model_dir}" in out and f"stats_dir: {tmp_path / 'ee' / 'stats'}" in out
    assert (model_dir / "config.json").is_file() and list(model_dir.glob("*.safetensors"))
    assert "llama" in str(model_dir).lower()  # the word BaseEditor (and AlphaEdit's shape choice) dispatch on

    class _Loaded:  # what EasyEdit main's layer_stats sees: config._name_or_path = model_name
        config = AutoConfig.from_pretrained(str(model_dir))

    assert default_model_name(_Loaded) == "smollm2-135m-llama"
    assert stats_path(tmp_path / "ee" / "stats", str(model_dir), "model.layers.4.mlp.down_proj").parts[-4:] == (
        "stats", "smollm2-135m-llama", "wikipedia_stats", "model.layers.4.mlp.down_proj_float32_mom2.npz")
    before = sorted(os.listdir(model_dir))
    assert main(["model", "export", str(tmp_path / "ee")]) == 0  # again: replaced, same content
    assert sorted(os.listdir(model_dir)) == before


@pytest.mark.parametrize("name, family", [("smollm2-135m", "qwen"), ("gemma3-270m", None)])
def test_export_refuses_a_family_easyedit_cannot_load(tmp_path, name, family):
    from revive_plugin.models import export_for_easyedit

    with pytest.raises(ValueError, match="no loader"):
        export_for_easyedit(name, tmp_path, family)
    assert not any(tmp_path.iterdir())
