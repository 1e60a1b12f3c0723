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


def test_word_tokens_follow_nltk_word_tokenize():
    # sentence split first, then the Treebank rules: a period is split at every sentence end,
    # contractions and quotes as nltk does, decimals kept
    text = 'He said "it\'s 2.5 km." Then he left. Didn\'t he?'
    assert M.word_tokens(text) == ["He", "said", "``", "it", "'s", "2.5", "km", ".", "''", "Then", "he", "left",
                                   ".", "Did", "n't", "he", "?"]


def test_fluency_hand_computed_on_fixed_texts():
    # "a b a b ." -> bigrams ab:2 ba:1 b.:1 (H2 = 1.5 bits), trigrams aba bab ab. (H3 = log2 3)
    one = ((2 / 3) * 1.5 + (4 / 3) * math.log2(3)) / 2
    assert M.text_n_gram_entropy("a b a b.") == pytest.approx(one)
    # "x y." -> bigram x y, y . (H2 = 1), trigram x y . (H3 = 0)
    two = ((2 / 3) * 1.0 + 0.0) / 2
    assert M.n_gram_entropy(["a b a b.", "x y."]) == pytest.approx((one + two) / 2)


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


def test_consistency_reference_is_other_subjects_sharing_relation_and_new_object():
    from revive_plugin.evaluation.counterfact import ConsistencyReferences

    def rec(subject, rel, true, new="Spain", ref=""):
        return {"case_id": 0, "reference_text": ref, "requested_rewrite": {
            "prompt": "{} is in", "subject": subject, "relation_id": rel,
            "target_true": {"str": " " + true}, "target_new": {"str": " " + new}}}

    texts = {"Lyon": "lyon wine river", "Nice": "nice beach river", "Madrid": "madrid capital",
             "Sevilla": "sevilla river orange", "Paris": "paris"}
    facts = [rec("Lyon", "P17", "France"), rec("Nice", "P17", "France"), rec("Madrid", "P17", "Spain"),
             rec("Sevilla", "P17", "Spain"), rec("Toledo", "P17", "Spain"), rec("Madrid", "P36", "Spain")]
    refs = ConsistencyReferences(facts, text_for=texts.get)
    edited = rec("Lyon", "P17", "France", new="Spain", ref="spain kingdom")
    # other subjects whose true (P17) object is Spain, with a text, sorted; not the P36 fact
    assert refs.texts(edited) == ["madrid capital", "sevilla river orange"]
    ref, memit = refs.reference(edited)
    assert memit and ref == "madrid capital sevilla river orange"
    fallback = rec("Lyon", "P17", "France", new="Italy", ref="italy republic")
    assert refs.reference(fallback) == ("italy republic", False)
    # Consistency = TF-IDF cosine of the joined generations and that reference (IDF from a corpus)
    tfidf = M.TfidfModel.fit(["madrid capital", "river orange", "river wine"])
    n = 4  # documents: 3 + 1 (smoothing)
    idf = {"madrid": math.log(n / 2) + 1, "capital": math.log(n / 2) + 1, "river": math.log(n / 3) + 1,
           "orange": math.log(n / 2) + 1}
    gen = ["Lyon has a river.", "The river is orange"]
    g = np.array([0, 0, 2 * idf["river"], idf["orange"]])  # madrid capital river orange
    r = np.array([idf["madrid"], idf["capital"], idf["river"], idf["orange"]])
    expected = float(g @ r / np.linalg.norm(g) / np.linalg.norm(r))
    assert M.tfidf_similarity(" ".join(gen), ref, tfidf) == pytest.approx(expected)
