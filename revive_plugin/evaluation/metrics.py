"""Pure metric functions (no model): MEMIT / paper Appendix E definitions.

* :func:`prob_comparison` - CounterFact Efficacy / Paraphrase / Neighborhood
  (Eq. 10-12): compare mean token NLLs of two targets.
* :func:`n_gram_entropy` - Fluency (Eq. 13 as MEMIT's code computes it:
  the mean of (2/3)·H2 and (4/3)·H3 in bits over nltk word tokens; tables show ×100).
* :class:`TfidfModel` / :func:`tfidf_similarity` - Consistency: cosine of TF-IDF
  vectors, IDF fitted on a reference corpus (smoothed IDF, L2-normalised, as
  scikit-learn's default ``TfidfVectorizer``).
* :func:`token_accuracy` - ZsRE (Eq. 7-9): teacher-forced top-1 accuracy.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

_TFIDF_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; ``nan`` for an empty input."""
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")


def prob_comparison(nll_first: Sequence[float], nll_second: Sequence[float]) -> list[bool]:
    """``nll_first[i] < nll_second[i]``: is the first target more likely (lower mean token NLL)?"""
    if len(nll_first) != len(nll_second):
        raise ValueError(f"length mismatch: {len(nll_first)} vs {len(nll_second)}")
    return [float(a) < float(b) for a, b in zip(nll_first, nll_second)]


def word_tokens(text: str) -> list[str]:
    """``nltk.word_tokenize`` without a downloaded model: sentences from nltk's Punkt tokenizer with its
    default (untrained) parameters instead of the downloadable English ``punkt`` tables, then nltk's
    improved Treebank word tokenizer on each sentence (as ``word_tokenize`` does). It differs from
    ``word_tokenize`` only where the English tables know an abbreviation ("Mr. Smith": two tokens "Mr"
    "." at a sentence break here, one token "Mr." there)."""
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    words = NLTKWordTokenizer()
    return [t for sent in PunktSentenceTokenizer().tokenize(text) for t in words.tokenize(sent)]


def entropy_bits(counts: Iterable[int]) -> float:
    """Shannon entropy (bits) of the distribution given by ``counts``."""
    c = np.asarray(list(counts), dtype=np.float64)
    if c.size == 0 or c.sum() <= 0:
        return 0.0
    p = c / c.sum()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def n_gram_counts(tokens: Sequence[str], n: int) -> collections.Counter:
    """Counts of the n-grams of a token sequence."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def text_n_gram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """MEMIT's per-text fluency: mean over n of weight_n · H_n (bits)."""
    if len(ns) != len(weights):
        raise ValueError("ns and weights must have the same length")
    tokens = word_tokens(text)
    return float(np.mean([w * entropy_bits(n_gram_counts(tokens, n).values()) for n, w in zip(ns, weights)]))


def n_gram_entropy(texts: str | Sequence[str], ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Fluency (Eq. 13, MEMIT's code): mean of :func:`text_n_gram_entropy` over texts."""
    if isinstance(texts, str):
        texts = [texts]
    return mean(text_n_gram_entropy(t, ns, weights) for t in texts)


def tfidf_tokens(text: str) -> list[str]:
    """Lower-cased words of >= 2 word characters (scikit-learn's default token pattern)."""
    return _TFIDF_TOKEN.findall(text.lower())


class TfidfModel:
    """TF-IDF with IDF fitted on a corpus: idf(t) = ln((1 + N) / (1 + df(t))) + 1.

    Vectors are raw term counts × idf, L2-normalised; words not seen when fitting
    are ignored (as scikit-learn does).
    """

    def __init__(self, vocab: dict[str, int], idf: np.ndarray):
        if len(vocab) != len(idf):
            raise ValueError(f"vocab has {len(vocab)} words but idf has {len(idf)} values")
        self.vocab = dict(vocab)
        self.idf = np.asarray(idf, dtype=np.float64)

    @classmethod
    def fit(cls, documents: Iterable[str]) -> "TfidfModel":
        """Fit the IDF on ``documents``."""
        df: collections.Counter = collections.Counter()
        n_docs = 0
        for doc in documents:
            n_docs += 1
            df.update(set(tfidf_tokens(doc)))
        if n_docs == 0:
            raise ValueError("cannot fit TF-IDF on an empty corpus")
        words = sorted(df)
        vocab = {w: i for i, w in enumerate(words)}
        dfs = np.array([df[w] for w in words], dtype=np.float64)
        return cls(vocab, np.log((1.0 + n_docs) / (1.0 + dfs)) + 1.0)

    def vector(self, text: str) -> dict[int, float]:
        """Sparse L2-normalised TF-IDF vector of ``text`` (``{}`` if it has no known word)."""
        counts = collections.Counter(self.vocab[w] for w in tfidf_tokens(text) if w in self.vocab)
        if not counts:
            return {}
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        val = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self.idf[idx]
        val /= np.linalg.norm(val)
        return dict(zip(idx.tolist(), val.tolist()))

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of the TF-IDF vectors of ``a`` and ``b`` (0 if either is empty)."""
        va, vb = self.vector(a), self.vector(b)
        if len(va) > len(vb):
            va, vb = vb, va
        return float(sum(v * vb.get(k, 0.0) for k, v in va.items()))


def tfidf_similarity(a: str, b: str, model: TfidfModel) -> float:
    """Consistency: TF-IDF cosine between generated text ``a`` and reference text ``b``."""
    return model.similarity(a, b)


def token_accuracy(predicted: Sequence[int], target: Sequence[int]) -> float:
    """Fraction of positions where the top-1 token equals the target token (ZsRE, Eq. 7-9)."""
    if len(predicted) != len(target):
        raise ValueError(f"length mismatch: {len(predicted)} predicted vs {len(target)} target tokens")
    if not target:
        return float("nan")
    return sum(int(p) == int(t) for p, t in zip(predicted, target)) / len(target)


def perplexity_from_nll(total_nll: float, n_tokens: int) -> float:
    """exp(total NLL / number of tokens)."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one scored token")
    return float(math.exp(total_nll / n_tokens))
