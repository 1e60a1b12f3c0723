"""Architecture table: where the FFN output matrix and its neighbours live, per ``config.model_type``.

Each :class:`ArchSpec` names the module templates that EasyEdit's hparams also use
(``rewrite_module_tmp`` is the FFN output matrix W whose input is the key k of Eq. (1)-(2)
in MEMIT's formulation). ``transposed`` is True where the weight is stored as (in, out)
(GPT-2's ``Conv1D``), so an update ΔW computed as (out, in) must be transposed before writing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    """Module-name templates (``{}`` = layer index) and storage layout of one architecture family."""

    name: str
    layer_module_tmp: str
    mlp_module_tmp: str
    rewrite_module_tmp: str
    attn_module_tmp: str
    ln_f_module: str
    lm_head_module: str
    transposed: bool = False



_GPT2 = ArchSpec(
    name="gpt2",
    layer_module_tmp="transformer.h.{}",
    mlp_module_tmp="transformer.h.{}.mlp",
    rewrite_module_tmp="transformer.h.{}.mlp.c_proj",
    attn_module_tmp="transformer.h.{}.attn",
    ln_f_module="transformer.ln_f",
    lm_head_module="transformer.wte",
    transposed=True,
)
_GPTJ = ArchSpec(
    name="gptj",
    layer_module_tmp="transformer.h.{}",
    mlp_module_tmp="transformer.h.{}.mlp",
    rewrite_module_tmp="transformer.h.{}.mlp.fc_out",
    attn_module_tmp="transformer.h.{}.attn",
    ln_f_module="transformer.ln_f",
    lm_head_module="lm_head",
)
_DOWN_PROJ = ArchSpec(
    name="down_proj",
    layer_module_tmp="model.layers.{}",
    mlp_module_tmp="model.layers.{}.mlp",
    rewrite_module_tmp="model.layers.{}.mlp.down_proj",
    attn_module_tmp="model.layers.{}.self_attn",
    ln_f_module="model.norm",
    lm_head_module="lm_head",
)

ARCH_TABLE: dict[str, ArchSpec] = {
    "gpt2": _GPT2,
    "gptj": _GPTJ,
    "llama": _DOWN_PROJ,
    "mistral": _DOWN_PROJ,
    "qwen2": _DOWN_PROJ,
    "qwen3": _DOWN_PROJ,
    "gemma2": _DOWN_PROJ,
    "gemma3_text": _DOWN_PROJ,
}


def arch_for(model) -> ArchSpec:
    """The :class:`ArchSpec` of ``model`` (an HF model or a config), by ``config.model_type``."""
    config = getattr(model, "config", model)
    model_type = getattr(config, "model_type", None)
    if model_type == "gemma3":
        # Multimodal Gemma-3 wraps the text model; its text layers are addressed through language_model.
        raise ValueError(
            "model_type 'gemma3' (multimodal wrapper) is not supported directly; load the text-only "
            "Gemma3ForCausalLM (model_type 'gemma3_text')"
        )
    try:
        return ARCH_TABLE[model_type]
    except KeyError:
        raise ValueError(
            f"unsupported model_type {model_type!r}; known: {sorted(ARCH_TABLE)}"
        ) from None


def num_layers(model) -> int:
    """Number of transformer blocks."""
    config = getattr(model, "config", model)
    for key in ("num_hidden_layers", "n_layer"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ValueError(f"cannot find the number of layers in config of type {type(config).__name__}")
