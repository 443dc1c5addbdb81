"""A*-decoding: best-first search over partial solutions, k candidate next steps sampled per
expansion, guided by a process reward.

Chatziveroglou 2025, "A*-Decoding: Token-Efficient Inference Scaling" (arXiv 2505.13672).
A state is a partial output; a step is the text up to the next delimiter (newline by default,
or the reward's own: ',' and newline for the arithmetic step checker) or a stop token. The
open state with the lowest f = g + h is expanded: k candidate next steps are sampled from it in
one batch (loops.search), each child is scored by the reward r in [0, 1] and pushed with
h = 1 - r and g = g(parent) + max(0, h - h(parent)) (g accumulates only increases of h, the
paper's cost, so a path whose steps keep verifying has g = 0 and one that goes wrong carries
the loss). The search ends when a complete state (it ended with a stop token or reached
max_new_tokens) is popped: that is the answer.

Choices where the card leaves room: an expanded state stays open, so when all k of its sampled
children score worse than it, it is expanded again with fresh samples (its children are a
sample of its successors, not all of them); ties in f go to the deeper state (more tokens), then
to the older one; children identical to a state already seen are dropped. The token budget
(`max_search_tokens`, default k x max_new_tokens) counts sampled tokens: each expansion caps its
steps at (budget left) // k, so the budget is never exceeded; when it runs out before a complete
state is popped, the output is the best open state (lowest f, then deepest) as far as it got.
Not lossless: it samples (sampling mode only) and selects.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from .. import rewards
from ..errors import DecodeLabError
from ..loops.search import Searcher, emit, end_mask
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class AStarConfig(Options):
    k: int = option(4, "candidate next steps sampled per expansion (one batch)", lo=1, hi=64)
    reward: str | None = rewards.reward_option("process reward scoring each partial solution (required)")
    delimiter: str | None = option(None, "characters that end a step (none: the reward's own, newline by default)")
    max_search_tokens: int = option(0, "tokens sampled over the whole search (0: k x max_new_tokens)", lo=0, hi=2**20)

    def validate(self):
        if self.reward is None:
            raise DecodeLabError("astar needs a process reward: reward=arithmetic, keywords:..., or a Reward or "
                                 "callable")
        rewards.check(self.reward)
        if self.delimiter == "":
            raise DecodeLabError("delimiter must name at least one character")


@dataclass(order=True)
class State:
    f: float
    depth: int  # minus the number of tokens, so deeper states sort first on ties
    order: int
    tokens: list[int] = field(compare=False)
    logps: list[float] = field(compare=False)
    g: float = field(compare=False)
    h: float = field(compare=False)
    done: bool = field(compare=False)


@register("astar", family="autoregressive", config=AStarConfig, lossless=None, needs=("batch",), modes=("sample",))
def run(req, config: AStarConfig):
    best = search(req, config, rewards.resolve(config.reward))
    yield emit(req, best.tokens, best.logps)


def search(req, config: AStarConfig, reward: rewards.Reward) -> State:
    """The best-first loop; returns the complete state popped first (or the best open one)."""
    ends = end_mask(req, config.delimiter or reward.delimiters)
    budget = config.max_search_tokens or config.k * req.max_new_tokens
    prompt = req.prompt.tolist()
    order = itertools.count()  # ties in f and depth: the older state first
    root = _children(req, reward, None, [([], [], False)], order)[0]
    frontier, seen, spent = [root], {()}, 0
    searcher = Searcher(req)
    while True:
        state = heapq.heappop(frontier)
        cap = min(req.max_new_tokens - len(state.tokens), (budget - spent) // config.k)
        if state.done or cap < 1:
            return state if state.done else min(frontier + [state])
        trials = searcher.sample(searcher.focus([prompt + state.tokens]), config.k, ends=ends, max_len=cap)
        spent += sum(len(t.tokens) for t in trials)
        steps = []
        for t in trials:
            tokens = state.tokens + t.tokens
            if tuple(tokens) not in seen:
                seen.add(tuple(tokens))
                done = (t.ended and t.tokens[-1] in req.stops) or len(tokens) >= req.max_new_tokens
                steps.append((tokens, state.logps + t.logps, done))
        for child in _children(req, reward, state, steps, order):
            heapq.heappush(frontier, child)
        heapq.heappush(frontier, state)  # still open: k children are a sample of its successors


def _children(req, reward, parent: State | None, steps, order) -> list[State]:
    """States for (tokens, logps, done) steps, scored in one reward batch."""
    if not steps:
        return []
    prompt, texts = rewards.texts(req.target, req.prompt, [s[0] for s in steps])
    scores = reward.batch(prompt, texts, [s[2] for s in steps])
    out = []
    for (tokens, logps, done), r in zip(steps, scores):
        h = 1.0 - r
        g = 0.0 if parent is None else parent.g + max(0.0, h - parent.h)
        out.append(State(g + h, -len(tokens), next(order), tokens, logps, g, h, done))
    return out
