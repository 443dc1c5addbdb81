"""Diversity and repetition metrics against counts by hand."""
import math

from decodelab.core.diversity import distinct_n, mean, repetition, surprise_bits, type_token_ratio


def test_distinct_n_pools_the_ngrams_of_all_sequences():
    a, b = [1, 2, 3, 1], [1, 2, 4]
    assert distinct_n([a, b], 1) == 4 / 7  # 1 2 3 4 among 7 tokens
    assert distinct_n([a, b], 2) == 4 / 5  # (1,2) twice, (2,3) (3,1) (2,4)
    assert distinct_n([a, b], 3) == 1.0
    assert distinct_n([a, a], 2) == 0.5  # identical outputs: half
    assert distinct_n([[1]], 2) is None


def test_repetition_type_token_ratio_and_surprise():
    seq = [5, 6, 5, 6, 5, 6]
    assert type_token_ratio(seq) == 2 / 6
    assert repetition(seq, 2) == 1 - 2 / 5  # (5,6) (6,5) distinct among 5 bigrams
    assert repetition([1, 2, 3], 4) is None and type_token_ratio([]) is None
    assert math.isclose(surprise_bits([math.log(0.5), math.log(0.25)]), 1.5)
    assert mean([1.0, None, 3.0]) == 2.0 and mean([None]) is None
