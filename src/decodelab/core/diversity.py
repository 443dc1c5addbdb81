"""Diversity and repetition of generated token ids: pure functions on lists of ids.

  distinct_n(seqs, n)      Li et al. 2016 (arXiv 1510.03055): distinct n-grams / all n-grams,
                           pooled over the sequences (1.0: no n-gram twice anywhere). Over the
                           outputs of one prompt it measures how different they are.
  type_token_ratio(seq)    distinct tokens / tokens of one output (Hyperfitting's TTR, on ids).
  repetition(seq, n)       the share of one output's n-grams that already occurred earlier in it
                           (Welleck et al. 2019's rep-n, arXiv 1908.04319: 1 - distinct / all).
  surprise_bits(logps)     mean -log2 p of tokens, from natural-log probabilities (Mirostat's
                           surprise; log2 of the perplexity).
All return None where there is nothing to measure (a sequence shorter than n).
"""
from __future__ import annotations

import math
from typing import Sequence


def ngrams(seq: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(seqs: Sequence[Sequence[int]], n: int) -> float | None:
    grams = [g for s in seqs for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else None


def type_token_ratio(seq: Sequence[int]) -> float | None:
    return len(set(seq)) / len(seq) if len(seq) else None


def repetition(seq: Sequence[int], n: int = 4) -> float | None:
    grams = ngrams(seq, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else None


def surprise_bits(logps: Sequence[float]) -> float | None:
    return -sum(logps) / len(logps) / math.log(2) if len(logps) else None


def mean(xs) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    kept = [x for x in xs if x is not None]
    return sum(kept) / len(kept) if kept else None
