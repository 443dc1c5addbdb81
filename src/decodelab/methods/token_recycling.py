"""Token Recycling: draft from an adjacency matrix of the target's own past top-k candidates
(Luo et al. 2024, "Turning Trash into Treasure: Accelerating Inference of Large Language Models
with Token Recycling", arXiv 2408.08696).

Notation: M [V, k] = adjacency matrix of token ids (k = 8), zero-initialised; M[t, i] = the i-th
most likely token the target predicted the last time it scored token t. Each step fills a static
tree template breadth-first (child of rank i under a node with token t gets M[t, i]), the
speculative loop verifies the whole tree in one target forward with tree attention, and
`observe` recycles the target's top-k at EVERY tree node, rejected ones included:
M[t] = top-k(logits at t's node). The default template is the reference's "2.2.2" (80 draft
nodes, 8/21/25/15/8/3 per level over 6 levels; the rank paths below are the reference
repository's tree_template_.py). `topN` templates are ours, for hardware where 80 extra tokens
per forward are not free (CPUs): the N-node best-first tree (at most 6 levels, as 2.2.2) under
rank-acceptance probabilities _RANK_PROBS = P(the accepted child is the parent's rank-r
candidate), measured with the 2.2.2 template at depth 1 on zoo:code-target over 20 HumanEval
and held-out prompts (0.69, 0.06, 0.04, 0.02, 0.005, 0.005, 0.01, 0.003; smoothed to decrease).
Calibrated this way, top8 is a rank-0 chain with a few rank-1 branches (levels 2/2/1/1/1/1); on
zoo:code-draft that raised its tau from 3.36 to 3.84 over probabilities shaped like 2.2.2's.

State: M lives in the caller's `State` (decodelab.state): pass the same State to carry M across
prompts, as the reference does (it never resets M); without one each generation starts from a
zero M; `reset=True` zeroes the State's M at the start of the run. M is int32: V * k * 4 bytes (128 KiB for a 4096-token vocabulary, 1 MiB for 32000).

`template="auto"` (the default): before each step an AutoLength (core/costs.py, as pld's and
sps's auto lengths) picks the best-first tree of n nodes, n up to the largest tree the target's
measured forward cost curve covers (15; models/costs.py), from the acceptance measured along the
accepted paths, per depth, and the steps' measured times, down to plain steps when no tree pays;
a root whose row of M was never written drafts nothing (its tree would be guesswork). The tree
of n nodes is valued at its depth (AutoLength's depth_of: under _RANK_PROBS best-first trees of
up to 6 nodes are rank-0 chains, larger ones branch at depth <= 6 and can commit no more than a
6-deep chain). The pooled and per-depth acceptance and the wait before the next probe carry from
one generation to the next (AutoLength's carry, as sps's), as M does in a State: a generation
whose first trees are rejected still knows that the depths below the first are accepted in runs.
While even always-accepted trees would not pay (AutoLength.rest), the drafter sits steps out, and
those plain steps recycle nothing into M. History: the auto size was first one template size per generation, chosen
under _RANK_PROBS (the reference's 80 nodes cost 8x a 1-token step on zoo:code-target-l on
llama.cpp and 1.5x on zoo:code-target on torch, where top4 ran 1.5x faster than 2.2.2), with the
AutoLength choosing n below it. On a host whose curve made that size 2 (an Intel Xeon, 480 MB L3,
zoo:code-target on llama.cpp: a 5-token forward 1.9x a 1-token one) no 2-node tree paid at the
measured step times, so it rested for the whole process: 0.98-0.99x greedy against top4's
1.43-1.52x (interleaved A/B, 6 HumanEval prompts). Sized up to the curve, valued at depth and with
the carry: 1.20x there (top4 1.43), and on zoo:code-target-l 1.20x against top2's 1.26 and top4's
1.15 (median per prompt; by total time 1.22 against 1.19 and 1.11).

Deviations: (1) several nodes of one tree can hold the same token; the reference's scatter leaves
the winning row unspecified, we write rows in node order and the accepted path's nodes last, so
the row of a token on the accepted path comes from its true context. (2) The template is cut at
the loop's max_depth near the end of the token budget. (3) Sampling mode, not in the reference:
the drafts are deterministic guesses (q = None), which recursive rejection sampling verifies
exactly. Lossless: greedy (tested token for token) and sampling (tested in distribution).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

from ..core.costs import PROBE_MAX, AutoLength
from ..core.templates import TreeTemplate
from ..core.tree import Draft, TokenTree
from ..errors import DecodeLabError
from ..loops import speculative
from ..models import costs
from ..options import Options, option
from ..registry import register

_REFERENCE_2_2_2 = [
    [0], [1], [2], [3], [4], [5], [6], [7],
    [0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [0, 6], [0, 7], [1, 0], [1, 1], [1, 2], [1, 3],
    [2, 0], [2, 1], [2, 2], [3, 0], [3, 1], [4, 0], [5, 0], [6, 0], [7, 0],
    [0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 0, 4], [0, 0, 5], [0, 0, 6], [0, 0, 7],
    [0, 1, 0], [0, 1, 1], [0, 1, 2], [0, 2, 0], [0, 2, 1], [0, 3, 0], [0, 4, 0], [0, 5, 0],
    [0, 6, 0], [0, 7, 0], [1, 0, 0], [1, 0, 1], [1, 1, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0], [5, 0, 0],
    [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3], [0, 0, 0, 4], [0, 0, 1, 0], [0, 0, 1, 1],
    [0, 0, 2, 0], [0, 0, 3, 0], [0, 0, 4, 0], [0, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0],
    [3, 0, 0, 0],
    [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 2], [0, 0, 0, 1, 0], [0, 0, 0, 2, 0],
    [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0],
]
_RANK_PROBS = [0.7, 0.06, 0.035, 0.02, 0.01, 0.008, 0.006, 0.004]  # P(rank-r candidate is accepted)
_TOP_N = re.compile(r"top([1-9][0-9]*)")


@functools.lru_cache(maxsize=None)
def tree_depths(n: int, rank_probs: tuple[float, ...]) -> tuple[int, ...]:
    """The depths of the best-first trees of 0..n nodes under rank_probs (AutoLength's depth_of),
    computed once per process, not at every generation's start."""
    return (0,) + tuple(TreeTemplate.best_first(k, list(rank_probs), max_depth=6).depth for k in range(1, n + 1))


@functools.lru_cache(maxsize=None)
def template(name: str) -> TreeTemplate:
    """'2.2.2' (the reference's 80 nodes) or 'topN' (our best-first tree of N draft nodes, N <= 256)."""
    if name == "2.2.2":
        return TreeTemplate.from_paths(_REFERENCE_2_2_2)
    m = _TOP_N.fullmatch(name)
    if m and int(m.group(1)) <= 256:
        return TreeTemplate.best_first(int(m.group(1)), _RANK_PROBS, max_depth=6)
    raise DecodeLabError(f"template must be '2.2.2' or 'topN' with 1 <= N <= 256, got '{name}'")


@dataclass(frozen=True, kw_only=True)
class TokenRecyclingConfig(Options):
    template: str = option("auto", "draft tree: 'auto' (best-first, sized before each step from the target's "
                           "measured forward costs and the acceptance so far, none when no tree pays), "
                           "'2.2.2' (the reference's 80 nodes) or 'topN' (N nodes, N <= 256, best-first)")
    topk: int = option(8, "candidates kept per token: the columns of M", lo=1, hi=64)
    reset: bool = option(False, "zero the State's matrix before this run instead of carrying it")

    def validate(self):
        if self.template == "auto":
            return
        t = template(self.template)
        if t.max_rank >= self.topk:
            raise DecodeLabError(f"template '{self.template}' uses candidate rank {t.max_rank}, "
                                 f"which needs topk >= {t.max_rank + 1}, got {self.topk}")


def matrix(req, config: TokenRecyclingConfig) -> torch.Tensor:
    """The adjacency matrix M [V, topk] (int32) in the request's State."""
    shape = (req.target.vocab_size, config.topk)
    return req.memory(("token_recycling", shape), lambda: torch.zeros(shape, dtype=torch.int32), config.reset)


def recycle(matrix: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor, path: list[int]) -> None:
    """M[tokens[i]] = top-k of logits[i] for every node i; nodes on `path` are written last.

    matrix: [V, k] int32 (on the CPU), updated in place. tokens: [N]. logits: [N, V] target
    logits per node. The writes go through numpy: a plain step recycles one row, and torch's
    indexing costs tens of microseconds a step on llama.cpp's cooled cache.
    """
    k = min(matrix.shape[1], logits.shape[-1])  # a vocabulary smaller than k fills k columns only
    top = logits.topk(k, dim=-1).indices.cpu().numpy()  # [N, k] best first
    m, ids = matrix.numpy(), tokens.tolist()
    if len(ids) == 1:
        m[ids[0], :k] = top[0]
        return
    on_path = set(path)
    order = [i for i in range(len(ids)) if i not in on_path] + list(path)
    last = {ids[i]: i for i in order}  # a token's last writer wins
    m[list(last), :k] = top[list(last.values())]


class RecyclingDrafter:
    """Fills the template from M at every step and recycles the target's top-k into M. auto: the
    template is the best-first tree (under rank_probs) of n <= len(tree_template) - 1 nodes, n
    chosen before each step by the AutoLength (0: a plain step)."""

    def __init__(self, matrix: torch.Tensor, tree_template: TreeTemplate, auto: AutoLength | None = None,
                 rank_probs: list[float] | None = None):
        self.matrix, self.template, self.auto, self.rank_probs = matrix, tree_template, auto, rank_probs
        self._m = matrix.numpy()  # M's rows read per step without tensor indexing
        self._full: dict[int, TreeTemplate] = {}  # nodes -> the template of that many nodes
        self._cut: dict[tuple[int, int], TreeTemplate] = {}  # (nodes, depth kept) -> it truncated there
        self._depth = 0  # the last draft's depth: the positions it verified

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        nodes, root = len(self.template) - 1, int(ctx[-1])
        if self.auto is not None:  # called every step, so its clock sees every step
            # a token the target has not scored yet has no candidates (its row of M is zeros, where
            # a written row holds k distinct ids): its tree would be guesswork that teaches the
            # acceptance estimate nothing about the recycled trees
            known = bool(self._m[root, 1] or self._m[root, 0])
            nodes = self.auto.length(nodes if max_depth and known else 0, context=len(ctx))
        if not nodes or not max_depth:
            self._depth = 0
            return Draft(TokenTree.chain([root]))
        if nodes not in self._full:
            self._full[nodes] = self.template if self.auto is None else \
                TreeTemplate.best_first(nodes, self.rank_probs, max_depth=6)
        full = self._full[nodes]
        # keyed by the depth the cut keeps, not by max_depth (the tokens left, which changes every step:
        # keyed by it, the tree and its masks were built anew at every step)
        cut = (nodes, min(max_depth, full.depth))
        if cut not in self._cut:
            self._cut[cut] = full.truncate(cut[1])
        t = self._cut[cut]
        self._depth = t.depth
        return Draft(t.fill(root, self.matrix))

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        recycle(self.matrix, draft.tree.tokens, logits, path)
        if self.auto is not None:
            self.auto.update(self._depth, len(path) - 1)

    def rest(self) -> int:  # the skipped plain steps recycle nothing: their rows of M wait
        if self.auto is None:
            return 0
        nodes = len(self.template) - 1  # the largest tree it drafts (none: it never drafts)
        return self.auto.rest(longest=nodes) if nodes else PROBE_MAX


@register("token_recycling", family="speculative", config=TokenRecyclingConfig, lossless="sampling",
          needs=("tree_mask",), budget=lambda b, given: {"template": f"top{b - 1}"})
def run(req, config: TokenRecyclingConfig):
    auto, probs = None, _RANK_PROBS[:config.topk]
    if config.template == "auto":
        n = len(costs.curve(req.target)) - 2  # the largest tree the cost curve covers
        tree = TreeTemplate.best_first(n, probs, max_depth=6)
        auto = AutoLength(lambda c: costs.curve(req.target, context=c), switch=costs.switch(req.target),
                          seen=costs.clock(req.target, "token_recycling"),
                          carry=costs.clock(req.target, "token_recycling:carry"), depth_of=tree_depths(n, tuple(probs)))
    else:
        tree = template(config.template)
    return speculative.decode(req, RecyclingDrafter(matrix(req, config), tree, auto, probs))
