"""Helpers for the search methods' tests: record the trials every Searcher.sample() call returns."""
from __future__ import annotations

import pytest
import torch

from decodelab import DecodeStats, Request, SamplingConfig
from decodelab.loops.search import Searcher


@pytest.fixture
def recorded(monkeypatch):
    """A list that receives, per sample() call, (the focused contexts, the trials returned)."""
    calls = []
    original = Searcher.sample

    def sample(self, logits, n, **kw):
        contexts = self._focused
        trials = original(self, logits, n, **kw)
        calls.append((contexts, trials))
        return trials

    monkeypatch.setattr(Searcher, "sample", sample)
    return calls


def request(target, prompt, max_new_tokens=24, stops=(), **sampling) -> Request:
    cfg = SamplingConfig(**sampling)
    return Request(target=target.fresh(), prompt=torch.tensor(prompt), max_new_tokens=max_new_tokens, sampling=cfg,
                   stats=DecodeStats(), rng=cfg.generator() if cfg.do_sample else None, stops=frozenset(stops))
