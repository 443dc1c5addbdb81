"""The speculative loop's rests (a drafter's optional rest(), core.costs.AutoLength.rest): the steps
a drafter sits out are the plain steps it would have been asked for, so the output, its
log-probabilities and its trace are those of a run without rests, in greedy and in sampling mode;
the drafter is not asked during a rest, and a drafter that drafts between rests stays exact."""
import pytest
import torch

import decodelab
from decodelab.core.sampling import SamplingConfig
from decodelab.core.tree import Draft, TokenTree
from decodelab.loops import speculative
from decodelab.request import Request
from decodelab.types import DecodeStats

PROMPT = [1, 2, 1, 2, 1]
N = 24


class Idle:
    """Drafts nothing."""

    def __init__(self, every: int = 0):
        self.every, self.asked, self.observed = every, 0, 0

    def propose(self, ctx, max_depth):
        self.asked += 1
        return Draft(TokenTree.chain([int(ctx[-1])]))

    def observe(self, draft, path, logits):
        self.observed += 1


class Resting(Idle):
    """Drafts nothing, and sits out `every` steps after each step it is asked for."""

    def rest(self):
        return self.every


class Guessing(Resting):
    """Drafts 3 tokens copied from a reference (the target's greedy output, one token of each
    draft wrong every other step) between its rests."""

    def __init__(self, every: int, reference: list[int]):
        super().__init__(every)
        self.reference = reference

    def propose(self, ctx, max_depth):
        self.asked += 1
        done = len(ctx) - len(PROMPT)
        guess = self.reference[done:done + min(3, max_depth)]
        if guess and self.asked % 2:
            guess[-1] = (guess[-1] + 1) % 6
        return Draft(TokenTree.chain([int(ctx[-1])] + guess))


def run(target, drafter, sample: bool) -> tuple[list[int], list[float], list]:
    sampling = SamplingConfig(do_sample=True, temperature=0.9, top_k=4, seed=7) if sample else SamplingConfig()
    req = Request(target=target.fresh(), prompt=torch.tensor(PROMPT), max_new_tokens=N, sampling=sampling,
                  stats=DecodeStats(), rng=sampling.generator() if sample else None, logprobs=[], trace=[])
    tokens = [t for chunk in speculative.decode(req, drafter) for t in chunk]
    return tokens, req.logprobs, req.trace


@pytest.mark.parametrize("sample", [False, True])
def test_a_rest_takes_the_plain_steps_the_drafter_would_have_taken(toy_pair, sample):
    target, _ = toy_pair
    plain, resting = Idle(), Resting(every=3)
    assert run(target, resting, sample) == run(target, plain, sample)
    # asked before every fourth step only: the first, then once after each rest of 3
    assert plain.asked == plain.observed == N and resting.asked == resting.observed == N // 4


def test_a_drafter_that_drafts_between_rests_stays_greedy(toy_pair):
    target, _ = toy_pair
    reference = decodelab.generate(target, PROMPT, "greedy", max_new_tokens=N, ignore_eos=True).tokens
    drafter = Guessing(2, reference)
    tokens, _, trace = run(target, drafter, sample=False)
    assert tokens == reference
    assert any(step.draft for step in trace) and sum(not step.draft for step in trace) >= 2 * drafter.asked - 2


def test_pld_rests_on_a_compute_bound_target_and_stays_greedy(toy_pair, monkeypatch):
    """A planted curve on which even always-accepted drafts lose: prompt lookup rests from its
    first step (its lookups and its AutoLength are not run at all) and its output is greedy's."""
    from decodelab.methods import pld
    from decodelab.models import costs

    target, _ = toy_pair
    monkeypatch.setattr(costs, "curve", lambda lm, n_max=16, context=0: [0.0] + [float(n) for n in range(1, 17)])
    asked = []
    propose = pld.LookupDrafter.propose
    monkeypatch.setattr(pld.LookupDrafter, "propose", lambda self, ctx, d: asked.append(1) or propose(self, ctx, d))
    out = decodelab.generate(target, PROMPT, "pld", max_new_tokens=N, ignore_eos=True)
    assert out.tokens == decodelab.generate(target, PROMPT, "greedy", max_new_tokens=N, ignore_eos=True).tokens
    assert asked == [] and out.stats.target_tokens_scored == N
