"""Helpers shared by the draft-model method tests: exact and empirical distributions of the first
generated tokens on ToyLM pairs, total-variation distance, and the greedy reference."""
from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest
import torch

import decodelab
from decodelab.core.sampling import SamplingConfig, probs_from_logits


@pytest.fixture
def one_thread():
    """Distribution tests make thousands of tiny forwards: one intra-op thread avoids oversubscribing
    a busy machine (4x faster here); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def exact_dist(model, prompt: list[int], sampling: SamplingConfig, n: int = 3) -> dict[tuple, float]:
    """Exact probability of every n-token continuation with non-zero probability, from
    `model.next_logits(context)` (ToyLM, or HFNext below) processed by `sampling`."""
    out = {}

    def walk(ctx, seq, prob):
        if len(seq) == n:
            out[tuple(seq)] = prob
            return
        probs = probs_from_logits(model.next_logits(ctx), sampling, ctx=ctx)  # ctx: for penalties, DRY
        for x in (probs > 0).nonzero().flatten().tolist():
            walk(ctx + [x], seq + [x], prob * float(probs[x]))

    walk(list(prompt), [], 1.0)
    return out


class HFNext:
    """next_logits(context) for a transformers model, by a full forward (exact, slow)."""

    def __init__(self, adapter):
        self.model, self.vocab_size = adapter.model, adapter.vocab_size

    @torch.no_grad()
    def next_logits(self, context: list[int]) -> torch.Tensor:
        return self.model(torch.tensor([context])).logits[0, -1].float()


def empirical_dist(method: str, target, draft, prompt: list[int], n_samples: int, seed0: int = 0,
                   n: int = 3, gen: int = 4, **kwargs) -> dict[tuple, float]:
    """Distribution of the first n of `gen` generated tokens (gen > n lets draft trees reach deeper
    than n, so deep tree nodes and multi-step commits are exercised)."""
    counts = Counter(
        tuple(decodelab.generate(target, prompt, method, draft=draft, max_new_tokens=gen, do_sample=True,
                                 seed=seed0 + i, ignore_eos=True, **kwargs).tokens[:n])
        for i in range(n_samples))
    return {k: c / n_samples for k, c in counts.items()}


def tv(a: dict, b: dict) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def iid_tv(p: dict, n_samples: int) -> float:
    """Expected TV between p and the empirical distribution of n i.i.d. draws from p (normal
    approximation of each count): 0.5 sum_x sqrt(2 p (1 - p) / (pi N))."""
    return 0.5 * sum(math.sqrt(2 * q * (1 - q) / (math.pi * n_samples)) for q in p.values())


def check_converges(method: str, target, draft, sizes=(200, 1600), prompt=(1, 2), gen: int = 4,
                    exact_target=None, exact_draft=None, **kwargs) -> list[float]:
    """TV to the exact target distribution of the first 3 tokens shrinks with N and ends under twice
    the i.i.d. expectation; the draft's own distribution (`exact_draft`, else the draft's) is far
    outside that bound (so the check can fail). Returns the TVs."""
    fields = {f.name for f in dataclasses.fields(SamplingConfig)} - {"do_sample", "seed"}
    sampling = SamplingConfig(do_sample=True, **{k: v for k, v in kwargs.items() if k in fields})
    p = exact_dist(exact_target or target, list(prompt), sampling)
    q = exact_dist(exact_draft or draft, list(prompt), sampling)
    bound = 2 * iid_tv(p, sizes[-1])
    assert tv(p, q) > 2 * bound, "the draft is too close to the target for this check to mean anything"
    tvs = [tv(p, empirical_dist(method, target, draft, list(prompt), n, seed0=1000 * i, gen=gen, **kwargs))
           for i, n in enumerate(sizes)]
    assert tvs[-1] < tvs[0], f"TV did not shrink with N: {tvs}"
    assert tvs[-1] < bound, f"TV {tvs[-1]:.4f} at N={sizes[-1]} above the bound {bound:.4f}"
    return tvs


def request(target, draft=None, sampling: SamplingConfig | None = None, rng=None, **kw):
    """A Request as api.stream builds it, for tests that drive a drafter or a loop directly."""
    from decodelab.request import Request
    from decodelab.types import DecodeStats

    return Request(target=target, prompt=torch.tensor([0]), max_new_tokens=1, sampling=sampling or SamplingConfig(),
                   stats=DecodeStats(), rng=rng, draft=draft, **kw)


def greedy_reference(target, prompt, max_new_tokens: int) -> list[int]:
    return decodelab.generate(target, prompt, "greedy", max_new_tokens=max_new_tokens, ignore_eos=True).tokens


def noisy_copy(model, scale: float, seed: int = 0):
    """A draft that agrees with the target often but not always: the target's weights plus noise."""
    import copy

    from decodelab.models.hf import HFCausalLM

    m = copy.deepcopy(model.model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in m.parameters():
            w.add_(torch.randn(w.shape, generator=g) * scale * w.std().clamp_min(1e-3))
    return HFCausalLM(m, model.tokenizer)


def equal_to_greedy(method: str, target, prompt, n: int, **kwargs):
    """Decode n tokens with `method` and assert ids and length equal plain greedy; returns the output."""
    out = decodelab.generate(target, prompt, method, max_new_tokens=n, ignore_eos=True, **kwargs)
    assert out.tokens == greedy_reference(target, prompt, n) and len(out.tokens) == n
    return out


def two_token_tvs(method: str, toy, prompt: list[int], temperature: float, sizes=(100, 1000),
                  **kwargs) -> tuple[list[float], int]:
    """Sample the first two tokens max(sizes) times (seeds 1..N); return the TV to the exact [V, V]
    distribution after each N in `sizes`, and how many runs committed both tokens in one target
    forward (a draft was accepted)."""
    v = toy.vocab_size
    p1 = torch.softmax(toy.next_logits(prompt) / temperature, -1).double()
    exact = torch.stack([p1[a] * torch.softmax(toy.next_logits(prompt + [a]) / temperature, -1).double()
                         for a in range(v)])  # [V, V]
    counts, tvs, accepted = torch.zeros(v, v, dtype=torch.float64), [], 0
    for i in range(1, max(sizes) + 1):
        out = decodelab.generate(toy, prompt, method, max_new_tokens=2, ignore_eos=True, do_sample=True,
                                 temperature=temperature, seed=i, **kwargs)
        counts[out.tokens[0], out.tokens[1]] += 1
        accepted += out.stats.target_forwards == 1
        if i in sizes:
            tvs.append(0.5 * float((counts / i - exact).abs().sum()))
    return tvs, accepted


# Planted forward cost curves for the `auto` draft sizes (models/costs.curve's shape: index n = an
# n-token forward, index 0 unused)
FLAT = [0.0] + [1.0 + 0.01 * n for n in range(1, 17)]  # memory-bound: a longer step costs little more
LINEAR = [0.0] + [float(n) for n in range(1, 17)]  # compute-bound: n tokens cost n times one
STEP = [0.0, 1.0] + [1.6 + 0.2 * (n - 2) for n in range(2, 17)]  # llama.cpp on zoo:code-target-l


def planted_auto_tree(method: str, curve: list[float], monkeypatch, **kwargs) -> tuple[int, int]:
    """A tree method's auto size on a planted curve (every model), on an order-1 ToyLM whose rows a
    State learns: asserts greedy's output, returns (target tokens scored, steps)."""
    from decodelab.models import costs

    toy = decodelab.models.ToyLM.random(12, order=1, seed=2, scale=3.0)
    monkeypatch.setattr(costs, "curve", lambda lm, n_max=16, context=0: curve)
    out = equal_to_greedy(method, toy, [3, 7, 1, 3, 7], 40, state=decodelab.State(), **kwargs)
    return out.stats.target_tokens_scored, len(out.stats.committed)


def planted_auto_tvs(method: str, monkeypatch, **kwargs) -> None:
    """A tree method's auto size in sampling mode on the planted FLAT curve (so trees are drafted):
    every size it picks is verified exactly (two_token_tvs, a State so the guesses get accepted)."""
    from decodelab.models import costs

    monkeypatch.setattr(costs, "curve", lambda lm, n_max=16, context=0: FLAT)
    toy = decodelab.models.ToyLM.random(5, order=2, seed=4, scale=1.5)
    tvs, accepted = two_token_tvs(method, toy, [1, 2, 1, 2, 1], 0.8, state=decodelab.State(), **kwargs)
    assert accepted > 100
    assert tvs[1] < tvs[0] and tvs[1] < 0.08, tvs


def drafted_sizes(drafter, ctx: torch.Tensor, accept: bool, n: int, vocab: int = 10) -> list[int]:
    """Drive a tree drafter n steps at ctx, every draft wholly accepted or wholly rejected (zero
    logits); returns each step's draft size (nodes below the root)."""
    sizes = []
    for _ in range(n):
        draft = drafter.propose(ctx, max_depth=10)
        sizes.append(len(draft.tree) - 1)
        drafter.observe(draft, list(range(len(draft.tree))) if accept else [0], torch.zeros(len(draft.tree), vocab))
    return sizes
