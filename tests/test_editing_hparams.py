"""Hyper-parameter files: EasyEdit keys, strict validation with file/key in the message."""

from __future__ import annotations

import pytest

from revive_plugin.arch import arch_for, lm_head_module
from revive_plugin.editing import METHODS, HParamsError, get_method, load_hparams
from revive_plugin.editing.hparams import AlphaEditHyperParams, MEMITHyperParams

EASYEDIT_KEYS = {
    "alg_name", "model_name", "stats_dir", "device", "layers", "clamp_norm_factor", "layer_selection", "fact_token",
    "v_num_grad_steps", "v_lr", "v_loss_layer", "v_weight_decay", "kl_factor", "mom2_adjustment",
    "mom2_update_weight", "rewrite_module_tmp", "layer_module_tmp", "mlp_module_tmp", "attn_module_tmp",
    "ln_f_module", "lm_head_module", "mom2_dataset", "mom2_n_samples", "mom2_dtype", "model_parallel",
}

#: model_type and whether the model ties its input and output embeddings (from each model's config.json)
MODEL_CONFIGS = {"smollm2-135m": ("llama", True), "gemma3-270m": ("gemma3_text", True),
                 "llama3-8b": ("llama", False), "gpt2-xl": ("gpt2", True), "gpt-j-6b": ("gptj", False)}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("model", sorted(MODEL_CONFIGS))
def test_yaml_module_names_come_from_the_architecture_table(method, model):
    model_type, tied = MODEL_CONFIGS[model]
    config = type("Config", (), {"model_type": model_type, "tie_word_embeddings": tied})()
    spec, hp = arch_for(config), load_hparams(method, model)
    assert hp.lm_head_module == lm_head_module(config)
    assert (hp.rewrite_module_tmp, hp.layer_module_tmp, hp.mlp_module_tmp, hp.attn_module_tmp, hp.ln_f_module) == (
        spec.rewrite_module_tmp, spec.layer_module_tmp, spec.mlp_module_tmp, spec.attn_module_tmp, spec.ln_f_module)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_bundled_yaml_files_load(method, model):
    hp = load_hparams(method, model)
    assert hp.alg_name == get_method(method).name
    assert hp.use_revive is True and hp.revive_tau == 0.1
    assert EASYEDIT_KEYS <= set(hp.to_dict())


def test_alphaedit_keys_and_scientific_notation(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("alg_name: AlphaEdit\nlayers: [4, 5]\nv_lr: 5e-1\nP_loc: null\nnullspace_threshold: 2e-2\nL2: 10\n")
    hp = AlphaEditHyperParams.from_hparams(str(p)[:-5])  # EasyEdit appends .yaml
    assert hp.v_lr == 0.5 and hp.nullspace_threshold == 0.02 and hp.L2 == 10.0


@pytest.mark.parametrize("text,key", [
    ("alg_name: MEMIT\nbogus_key: 1\n", "bogus_key"),
    ("alg_name: MEMIT\nlayers: five\n", "layers"),
    ("alg_name: MEMIT\nrevive_tau: 1.5\n", "revive_tau"),
    ("alg_name: MEMIT\nuse_revive: 3\n", "use_revive"),
    ("alg_name: ROME\n", "alg_name"),
])
def test_bad_keys_name_file_and_key(tmp_path, text, key):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(HParamsError) as e:
        MEMITHyperParams.from_hparams(p)
    assert str(p) in str(e.value) and key in str(e.value)


def test_missing_file_and_unknown_method(tmp_path):
    with pytest.raises(FileNotFoundError):
        MEMITHyperParams.from_hparams(tmp_path / "none.yaml")
    with pytest.raises(ValueError, match="unknown editing method"):
        get_method("ROME")
    with pytest.raises(HParamsError, match="nope"):
        load_hparams("MEMIT", nope=1)
