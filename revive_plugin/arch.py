"""Architecture table: everything the project knows about a model family, per ``config.model_type``.

Each :class:`ArchSpec` names the module templates that EasyEdit's hparams also use
(``rewrite_module_tmp`` is the FFN output matrix W whose input is the key k of Eq. (1)-(2)
in MEMIT's formulation). ``transposed`` is True where the weight is stored as (in, out)
(GPT-2's ``Conv1D``), so an update ΔW computed as (out, in) must be transposed before writing.
It also says where the decoder stack lives (``base_attr``), whether value optimisation may restart
that stack after the z layer (``truncatable``: no absolute position embeddings; otherwise the slow full
forward runs), the config key of the hidden size and of the final-logit soft-capping, and the norm that
sits between the FFN output and the residual stream where there is one (Gemma-2/3's
``post_feedforward_layernorm``: MEMIT's residual targets are pulled back through it, docs/methods.md).

Adding an architecture is one row of :data:`ARCH_TABLE` (plus its hparams YAMLs); every other module
asks :func:`arch_for`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ArchSpec:
    """Module-name templates (``{}`` = layer index) and storage layout of one architecture family."""

    name: str
    layer_module_tmp: str
    mlp_module_tmp: str
    rewrite_module_tmp: str
    attn_module_tmp: str
    ln_f_module: str
    #: the output (unembedding) module of an untied model; see :func:`lm_head_module`
    lm_head_module: str
    #: the input embedding, which is also the unembedding where ``config.tie_word_embeddings``
    embed_module: str
    transposed: bool = False
    #: attribute of the causal-LM model holding the decoder stack (``model.model``, ``model.transformer``)
    base_attr: str = "model"
    #: the stack is ``<base_attr>.layers`` without absolute position embeddings, so value optimisation can
    #: restart it after the z layer (truncated / prefix-cached forward) instead of the full forward
    truncatable: bool = False
    #: config key of the hidden size
    hidden_size_key: str = "hidden_size"
    #: config key of the final-logit soft-capping value (Gemma), or None where the family has none
    logit_softcap_key: str | None = None
    #: RMSNorm applied to the FFN output before it joins the residual stream (``{}`` = layer), or None
    ffn_post_norm_tmp: str | None = None
    #: the norm's gain is ``weight + ffn_post_norm_offset`` (Gemma stores gain − 1)
    ffn_post_norm_offset: float = 0.0


_GPT2 = ArchSpec(
    name="gpt2",
    layer_module_tmp="transformer.h.{}",
    mlp_module_tmp="transformer.h.{}.mlp",
    rewrite_module_tmp="transformer.h.{}.mlp.c_proj",
    attn_module_tmp="transformer.h.{}.attn",
    ln_f_module="transformer.ln_f",
    lm_head_module="transformer.wte",
    embed_module="transformer.wte",
    transposed=True,
    base_attr="transformer",
    hidden_size_key="n_embd",
)
_GPTJ = ArchSpec(
    name="gptj",
    layer_module_tmp="transformer.h.{}",
    mlp_module_tmp="transformer.h.{}.mlp",
    rewrite_module_tmp="transformer.h.{}.mlp.fc_out",
    attn_module_tmp="transformer.h.{}.attn",
    ln_f_module="transformer.ln_f",
    lm_head_module="lm_head",
    embed_module="transformer.wte",
    base_attr="transformer",
    hidden_size_key="n_embd",
)
_DOWN_PROJ = ArchSpec(
    name="down_proj",
    layer_module_tmp="model.layers.{}",
    mlp_module_tmp="model.layers.{}.mlp",
    rewrite_module_tmp="model.layers.{}.mlp.down_proj",
    attn_module_tmp="model.layers.{}.self_attn",
    ln_f_module="model.norm",
    lm_head_module="lm_head",
    embed_module="model.embed_tokens",
    truncatable=True,
)
_GEMMA = replace(_DOWN_PROJ, name="gemma", logit_softcap_key="final_logit_softcapping",
                 ffn_post_norm_tmp="model.layers.{}.post_feedforward_layernorm", ffn_post_norm_offset=1.0)

ARCH_TABLE: dict[str, ArchSpec] = {
    "gpt2": _GPT2,
    "gptj": _GPTJ,
    "llama": _DOWN_PROJ,
    "mistral": _DOWN_PROJ,
    "qwen2": _DOWN_PROJ,
    "qwen3": _DOWN_PROJ,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
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


def lm_head_module(model) -> str:
    """The ``lm_head_module`` an hparams file names for ``model`` (an HF model or its config): the module whose
    ``.weight`` is the unembedding as ``named_parameters()`` lists it. Where the model ties its input and
    output embeddings (SmolLM2, Gemma 3, GPT-2) the tied weight is listed once, under the input embedding."""
    config = getattr(model, "config", model)
    spec = arch_for(config)
    return spec.embed_module if getattr(config, "tie_word_embeddings", False) else spec.lm_head_module


def num_layers(model) -> int:
    """Number of transformer blocks."""
    config = getattr(model, "config", model)
    for key in ("num_hidden_layers", "n_layer"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ValueError(f"cannot find the number of layers in config of type {type(config).__name__}")
