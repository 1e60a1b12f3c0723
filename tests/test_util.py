"""The shared batching and padding helpers (covariance, perplexity, scoring and editing all use them)."""

import torch

from revive_plugin._util import budget_batches, pad_batch


def test_budget_batches_keep_rows_times_longest_within_the_budget():
    lengths = [2, 3, 3, 5, 9]
    assert list(budget_batches(range(5), lengths.__getitem__, 10, max_rows=2)) == [[0, 1], [2, 3], [4]]
    assert list(budget_batches([4, 4, 12], int, 10)) == [[4, 4], [12]]  # one item over the budget: alone
    assert list(budget_batches([], len, 10)) == []
    # unsorted: the longest seen so far counts, not the newest item
    assert list(budget_batches([[1] * 5, [1], [1]], len, 10)) == [[[1] * 5, [1]], [[1]]]
    assert list(budget_batches("abcdefg", len, 100, max_rows=3)) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]


def test_budget_batches_stream_lazily():
    seen = []

    def items():
        for i in range(100):
            seen.append(i)
            yield i

    first = next(budget_batches(items(), lambda i: 1, 3))
    assert first == [0, 1, 2] and seen == [0, 1, 2, 3]


def test_pad_batch_right_and_left():
    ids, mask = pad_batch([[5, 6, 7], [8]], 0, "cpu")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], 9, "cpu", left=True)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long
