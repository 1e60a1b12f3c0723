"""Metric functions against small hand-computed cases."""

import math

import numpy as np
import pytest

from revive_plugin.evaluation import metrics as M


def test_entropy_bits_uniform_and_point():
    assert M.entropy_bits([1, 1, 1, 1]) == pytest.approx(2.0)
    assert M.entropy_bits([5]) == 0.0
    assert M.entropy_bits([]) == 0.0
    assert M.entropy_bits([1, 3]) == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)))


def test_n_gram_entropy_hand_computed():
    # tokens a b c d: bigrams ab bc cd (H2 = log2 3), trigrams abc bcd (H3 = 1)
    expected = ((2 / 3) * math.log2(3) + (4 / 3) * 1.0) / 2
    assert M.n_gram_entropy("a b c d") == pytest.approx(expected)
    assert M.n_gram_entropy(["a b c d", "x x x x"]) == pytest.approx(expected / 2)


def test_fluency_repetitive_below_varied():
    repetitive = "the cat the cat the cat the cat the cat the cat the cat the cat"
    varied = "The quick brown fox jumps over the lazy dog while seven wizards quietly brew potions."
    low, high = M.n_gram_entropy(repetitive), M.n_gram_entropy(varied)
    # repetitive: bigrams {the cat: 8, cat the: 7} and trigrams {the cat the: 7, cat the cat: 7}
    h2 = M.entropy_bits([8, 7])
    assert low == pytest.approx(((2 / 3) * h2 + (4 / 3) * 1.0) / 2)
    assert high > 3 * low


def test_word_tokens_split_punctuation():
    assert M.word_tokens("Paris, France.") == ["Paris", ",", "France", "."]


def test_tfidf_identical_unrelated_and_hand_value():
    model = M.TfidfModel.fit(["apple banana", "apple cherry", "dog cat"])
    assert model.similarity("apple banana", "apple banana") == pytest.approx(1.0)
    assert model.similarity("banana cherry", "dog cat") == 0.0
    assert model.similarity("unknownword", "unknownword") == 0.0
    idf = {w: math.log(4 / (1 + df)) + 1 for w, df in {"apple": 2, "banana": 1, "cherry": 1}.items()}
    a = np.array([idf["apple"], idf["banana"], 0.0])
    b = np.array([idf["apple"], 0.0, idf["cherry"]])
    expected = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert M.tfidf_similarity("Apple banana!", "apple, cherry", model) == pytest.approx(expected)


def test_tfidf_term_counts_matter():
    model = M.TfidfModel.fit(["apple banana", "cherry"])
    assert model.similarity("apple apple banana", "apple banana") < 1.0


def test_prob_comparison_and_token_accuracy():
    assert M.prob_comparison([1.0, 3.0, 2.0], [2.0, 1.0, 2.0]) == [True, False, False]
    assert M.token_accuracy([1, 2, 3], [1, 5, 3]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        M.token_accuracy([1], [1, 2])
    with pytest.raises(ValueError):
        M.prob_comparison([1.0], [])


def test_perplexity_from_nll_and_mean():
    assert M.perplexity_from_nll(2 * math.log(5.0), 2) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        M.perplexity_from_nll(1.0, 0)
    assert math.isnan(M.mean([]))
