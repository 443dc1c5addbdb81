"""ADED: adaptive draft-verification with a tri-gram matrix and an MCTS-style draft tree
(Liu et al. 2024, "Adaptive Draft-Verification for Efficient Large Language Model Decoding",
arXiv 2407.12021).

Notation: T(z | x, y) = tri-gram matrix, the weight of next token z after tokens x, y, normalised
per context (x, y) into P(z | x, y), the drafter's stand-in for the target p. Each step grows a
draft tree from the root (the last committed token) by PUCT simulations, the speculative loop
verifies it in one target forward with tree attention, and the matrix adapts:
  - committed text: every new tri-gram (x, y, z) of the context adds 1 to T(z | x, y); the
    prompt is folded in before the first draft, the accepted and bonus tokens after each step;
  - target predictions: at EVERY verified node (context = parent token, node token) the target's
    top-`topk` tokens add their probability p(z) to T(z | x, y).
Accepted tokens are committed, so they carry the most weight: this is the acceptance history the
exploitation term sees.

Draft tree (one PUCT simulation adds at most one node): descend from the root choosing the
child c of node s that maximises
    Q(c) + c_puct * P(c) * sqrt(N(s) + 1) / (1 + N(c)),
where P(c) = P(token c | parent token, token s) over the node's `branch` likeliest candidates,
N = visit counts and Q(c) = mean value of the simulations through c. The descent stops at the
first child not yet in the draft, which joins it; its value is its path probability (the product
of P along its path, the matrix's estimate that the whole path is accepted) and is backed up
along the path. Stop at `budget` draft nodes, or when every reachable candidate is drafted.

Choices where the paper gives no detail (swept in the bench): the constants above (depth 8,
branch 4, c_puct 1.0, topk 4); budget "auto" (the default; it was a fixed 8, the fastest of 4, 8
and 24 on 2 CPU cores with the zoo code model on torch): before each step core.costs.AutoLength
chooses the number of draft nodes from the target's measured forward cost curve (up to the 15
nodes it covers), the acceptance measured so far per depth and the steps' measured times, down
to a plain step when no tree pays, and the simulations stop there. A tree of n nodes is valued
at its depth, learned as the mean depth of the trees built at that size (valued as an n-deep
chain, the large bushy trees looked worth their cost: 1.03x greedy on zoo:code-target on
llama.cpp against 1.30x for budget 4). Interleaved A/B runs (HumanEval, median per prompt x
greedy): zoo:code-target on llama.cpp auto 1.21, budget 4 / 8 1.28 / 1.12; zoo:code-target-l on
llama.cpp 1.37 against 1.27 / 1.33; zoo:code-target on torch 2.51 against 2.23 / 2.55. Carrying
the acceptance across generations (as sps and Token Recycling do) cost it there (1.09 against
1.21). sqrt(N(s) + 1) instead of sqrt(N(s)) so the
first simulation follows the prior; the matrix starts empty (the paper initialises it from a
corpus) and, like Token Recycling's, lives in the caller's State (carried across the prompts
that share one; `reset` empties it);
a context (x, y) never seen backs off to the bigram context (y); a context keeps its 16 heaviest
candidates once it holds more than 32. Lossless: greedy (tested token for token); in sampling
mode the tree is a deterministic guess (q = None), verified exactly by rejection sampling.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import torch

from ..core.costs import PROBE_MAX, AutoLength
from ..core.tree import Draft, TokenTree
from ..loops import speculative
from ..models import costs
from ..options import Options, option
from ..registry import register

_KEEP, _PRUNE_AT = 16, 32


@dataclass(frozen=True, kw_only=True)
class ADEDConfig(Options):
    budget: int | None = option(None, "draft nodes per step (below the root); auto: chosen before each step from the "
                                      "target's measured forward costs and the acceptance so far (none when no tree "
                                      "pays)", lo=1, hi=256, auto=True)
    depth: int = option(8, "deepest draft level", lo=1, hi=256)
    branch: int = option(4, "candidates per node, the likeliest under the matrix", lo=1, hi=256)
    c_puct: float = option(1.0, "PUCT exploration weight", lo=0)
    topk: int = option(4, "target top-k folded into the matrix at every verified node (0: tokens only)",
                       lo=0, hi=64)
    reset: bool = option(False, "empty the State's matrix before this run instead of carrying it")


class TrigramMatrix:
    """Sparse T(z | x, y) with a bigram backoff T(z | y); x = -1 before the first token."""

    def __init__(self):
        self.tri: dict[tuple[int, int], dict[int, float]] = {}
        self.bi: dict[int, dict[int, float]] = {}

    def add(self, x: int, y: int, z: int, w: float) -> None:
        for table, key in ((self.tri, (x, y)), (self.bi, y)):
            entry = table.setdefault(key, {})
            entry[z] = entry.get(z, 0.0) + w
            if len(entry) > _PRUNE_AT:
                table[key] = dict(heapq.nlargest(_KEEP, entry.items(), key=lambda kv: kv[1]))

    def candidates(self, x: int, y: int, n: int) -> list[tuple[int, float]]:
        """The n likeliest next tokens after (x, y) with their probabilities P(z | x, y)."""
        entry = self.tri.get((x, y)) or self.bi.get(y)
        if not entry:
            return []
        total = sum(entry.values())
        return [(z, w / total) for z, w in heapq.nlargest(n, entry.items(), key=lambda kv: kv[1])]

    def __len__(self) -> int:
        return len(self.tri)


def matrix(req, config: ADEDConfig) -> TrigramMatrix:
    """The tri-gram matrix in the request's State."""
    return req.memory(("aded", req.target.vocab_size), TrigramMatrix, config.reset)


class PUCTDrafter:
    """auto: sizes each step's tree (its draft nodes, 0 for a plain step) up to `most` nodes; the
    tree's depth and the accepted length update it, and the mean depth of the trees built at each
    size is its depth_of (a tree is valued at its depth: core.costs.best_length)."""

    def __init__(self, matrix: TrigramMatrix, config: ADEDConfig, auto: AutoLength | None = None, most: int = 0):
        self.matrix, self.config, self.auto, self.most = matrix, config, auto, most
        self._depths: dict[int, list[int]] = {}  # nodes -> [summed depth, trees] of the trees built at that size
        self._seen = 0  # context tokens already folded into the matrix
        self._before_root = -1  # the token before the root of the last draft
        self._depth = 0  # the last draft's depth: the positions it verified

    def _fold(self, ctx: list[int]) -> None:
        for j in range(max(self._seen, 1), len(ctx)):
            self.matrix.add(ctx[j - 2] if j >= 2 else -1, ctx[j - 1], ctx[j], 1.0)
        self._seen = len(ctx)

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        c, ids = self.config, ctx.tolist()
        self._fold(ids)
        self._before_root = ids[-2] if len(ids) > 1 else -1
        budget = c.budget
        if self.auto is not None:  # called every step, so its clock sees every step
            budget = self.auto.length(self.most if max_depth else 0, context=len(ids))
            if not budget:
                self._depth = 0
                return Draft(TokenTree.chain([ids[-1]]))
        # search tree: token, parent, depth, prior P, path value, visits N, value sum W, children,
        # open = may still lead to a node not yet drafted
        tok, par, dep, prior, val = [ids[-1]], [-1], [0], [1.0], [1.0]
        n, w, kids, open_ = [0], [0.0], [None], [min(c.depth, max_depth) > 0]
        draft_of = {0: 0}  # search node -> draft node, in the order nodes join the draft
        cap = min(c.depth, max_depth)
        while open_[0] and len(draft_of) <= budget:
            s, path = 0, [0]
            while True:
                if kids[s] is None:  # expand: the likeliest candidates after (parent token, token)
                    x = tok[par[s]] if s else self._before_root
                    kids[s] = []
                    for z, pz in (self.matrix.candidates(x, tok[s], c.branch) if dep[s] < cap else []):
                        kids[s].append(len(tok))
                        tok.append(z), par.append(s), dep.append(dep[s] + 1), prior.append(pz)
                        val.append(val[s] * pz), n.append(0), w.append(0.0), kids.append(None), open_.append(True)
                live = [k for k in kids[s] if open_[k]]
                if not live:
                    open_[s] = False  # a dead end: no candidates, the depth cap, or all drafted
                    break
                root_n = math.sqrt(n[s] + 1)
                s = max(live, key=lambda k: (w[k] / n[k] if n[k] else 0.0) + c.c_puct * prior[k] * root_n / (1 + n[k]))
                path.append(s)
                if s not in draft_of:
                    draft_of[s] = len(draft_of)
                    break
            for k in path:
                n[k] += 1
                w[k] += val[s]
            for k in reversed(path[:-1]):  # close the ancestors whose subtrees are exhausted
                if any(open_[j] for j in kids[k]):
                    break
                open_[k] = False
        order = sorted(draft_of, key=draft_of.get)
        self._depth = max(dep[s] for s in order)
        if self.auto is not None and self.auto.depth_of is not None and len(order) - 1 == budget:  # its depth
            d = self._depths.setdefault(budget, [0, 0])
            d[0], d[1] = d[0] + self._depth, d[1] + 1
            self.auto.depth_of[budget] = max(1, round(d[0] / d[1]))
        tree = TokenTree.from_lists([tok[s] for s in order], [draft_of.get(par[s], -1) for s in order])
        return Draft(tree)

    def rest(self) -> int:
        """Plain steps without asking (core.costs.AutoLength.rest) while no tree of up to `most` nodes
        could pay; the skipped steps' tri-grams are folded in at the next draft."""
        if self.auto is None:
            return 0
        return self.auto.rest(longest=self.most) if self.most else PROBE_MAX

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        if self.auto is not None:
            self.auto.update(self._depth, len(path) - 1)
        if self.config.topk == 0:
            return
        tree = draft.tree
        k = min(self.config.topk, logits.shape[-1])
        top = torch.softmax(logits, dim=-1).topk(k, dim=-1)  # values, indices: [N, k]
        tokens, parents = tree.tokens.tolist(), tree.parent_list
        for i, (ps, zs) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            x = tokens[parents[i]] if i else self._before_root
            for z, pz in zip(zs, ps):
                self.matrix.add(x, tokens[i], z, pz)


@register("aded", family="speculative", config=ADEDConfig, lossless="sampling", needs=("tree_mask",),
          budget="budget")
def run(req, config: ADEDConfig):
    auto, most = None, 0
    if config.budget is None:
        most = len(costs.curve(req.target)) - 2  # the largest tree the cost curve covers
        auto = AutoLength(lambda c: costs.curve(req.target, context=c), switch=costs.switch(req.target),
                          seen=costs.clock(req.target, "aded"),
                          depth_of=[min(n, config.depth) for n in range(most + 1)])  # then learned per size
    return speculative.decode(req, PUCTDrafter(matrix(req, config), config, auto, most))
