"""DySpec: dynamic token tree (Xiong et al. 2024, "DySpec: Faster Speculative Decoding with Dynamic
Token Tree Structure", arXiv 2410.11744).

Notation: p = target, q = draft (processed by the same SamplingConfig), v(n) = value of tree node n
= product of q along its root path (v(root) = 1), the estimate of the probability that n is
accepted. The tree grows greedily at run time: a max-heap holds one candidate per node, "the next
child of n"; pop the best, add that child, push its next sibling and (once the draft has scored the
new node) its own first child; stop at `budget` draft tokens. The whole tree is verified in one
target forward with a tree attention mask: greedy tree verification (greedy), recursive rejection
sampling (sampling, core.verify.rejection_verify). Lossless for greedy and sampling.

The paper's value rule and sibling sampling are not published in detail; the reading chosen:
- Greedy: the children of n are q's tokens in descending order; candidate value v(n) q_n(x).
- Sampling: children are drawn lazily WITHOUT replacement from q_n (each popped candidate draws
  one token from q_n with the earlier siblings removed), so siblings are in draw order as
  recursive rejection sampling needs. A candidate's value must not depend on the token it will
  become (that would bias which draws enter the tree and break losslessness), so it is
  v(n) E_{x ~ q_res}[q_n(x)], q_res = q_n without the drawn siblings, renormalised. Once drawn,
  a node's value is v(n) q_n(x), as in greedy.
Deviation, for speed: up to `expand` candidates are popped per round and the draft scores all new
nodes in ONE tree forward (the paper expands one node per draft call). A round ends early when the
best candidate would be the first child of a node popped in this round (not scored yet), whose
value is estimated as v(node) times a running mean of the first child's share (max q when greedy,
sum q^2 when sampling); so rounds batch competing siblings and a confident draft grows a chain,
one draft forward per depth. `expand=1` is the exact greedy growth. Each round re-forwards the tree
so far (our adapters' tree masks cover one forward only). The round rule looks only at values of
tokens already drawn, never at the token a candidate will become, so sampling stays exact.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import torch

from ..core.sampling import sample
from ..core.tree import Draft, TokenTree
from ..loops import speculative
from ..loops.drafting import DraftModelDrafter, stack_q
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class DySpecConfig(Options):
    budget: int = option(24, "draft tokens per step (tree nodes below the root)", lo=1, hi=256)
    expand: int = option(8, "candidates popped per draft forward (1: the paper's one node per call)", lo=1, hi=256)


class _Node:
    """An expanded node: its depth, log value, q and the state of its sibling draws."""

    def __init__(self, depth: int, logv: float, q: torch.Tensor, greedy: bool, most: int):
        self.depth, self.logv, self.q = depth, logv, q  # q: [V]
        # greedy: the `most` (= budget) likeliest tokens, in descending order
        self.order = torch.topk(q, min(most, q.shape[-1])).indices.tolist() if greedy else None
        self.residual = None if greedy else q.clone()  # q without the drawn children (sampling)
        self.drawn = 0

    def has_next(self) -> bool:
        if self.order is not None:
            return self.drawn < len(self.order)
        return bool(self.residual.sum() > 0)

    def next_value(self) -> float:
        """log value of the next child, computed before it is drawn."""
        if self.order is not None:
            return self.logv + float(self.q[self.order[self.drawn]].log())
        r = self.residual / self.residual.sum()
        return self.logv + float((r * self.q).sum().log())

    def draw(self, rng: torch.Generator | None) -> int:
        if self.order is not None:
            x = self.order[self.drawn]
        else:
            x = int(sample(self.residual / self.residual.sum(), rng))
            self.residual[x] = 0.0
        self.drawn += 1
        return x


class DySpecDrafter(DraftModelDrafter):
    def __init__(self, req, budget: int, expand: int):
        super().__init__(req)
        self.budget, self.expand = budget, expand
        self._first_child = 0.5  # running mean of the value share of a node's first child

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        tokens, parents = [int(ctx[-1])], [-1]
        if max_depth == 0:
            return Draft(TokenTree.chain(tokens))
        greedy = not self.sampling.do_sample
        nodes = {0: _Node(0, 0.0, self.q(self.root_logits(ctx)), greedy, self.budget)}
        heap: list[tuple[float, int]] = []  # (-log value of its next child, node)
        self._push(heap, nodes, 0)
        while heap and len(tokens) - 1 < self.budget:
            fresh = []  # new nodes whose children the draft must score
            pending = -math.inf  # estimated log value of the best child of a fresh node
            while heap and len(fresh) < self.expand and len(tokens) - 1 < self.budget:
                if -heap[0][0] < pending:  # a fresh node's child would come next: score first
                    break
                _, n = heapq.heappop(heap)
                parent = nodes[n]
                x = parent.draw(self.rng)
                tokens.append(x)
                parents.append(n)
                self._push(heap, nodes, n)
                if parent.depth + 1 < max_depth:
                    logv = parent.logv + float(parent.q[x].log())
                    fresh.append((len(tokens) - 1, logv))
                    pending = max(pending, logv + math.log(self._first_child))
            if len(tokens) - 1 >= self.budget:
                break
            if not fresh:  # every new node is at the depth limit: keep widening
                continue
            qs = self.q(self.score_tree(len(ctx), tokens, parents)[[i - 1 for i, _ in fresh]])  # [F, V]
            for (i, logv), q in zip(fresh, qs):
                nodes[i] = _Node(nodes[parents[i]].depth + 1, logv, q, greedy, self.budget)
                self._push(heap, nodes, i)
            factor = (qs.max(-1).values if greedy else (qs * qs).sum(-1)).mean()  # first child's share
            self._first_child = 0.7 * self._first_child + 0.3 * float(factor.clamp(1e-6, 1.0))
        tree = TokenTree.from_lists(tokens, parents)
        if greedy:
            return Draft(tree)
        rows = {i: nd.q for i, nd in nodes.items() if nd.drawn}
        return Draft(tree, stack_q(rows, len(tree), nodes[0].q.shape[-1]))

    @staticmethod
    def _push(heap, nodes, n: int) -> None:
        if nodes[n].has_next():
            heapq.heappush(heap, (-nodes[n].next_value(), n))


@register("dyspec", family="speculative", config=DySpecConfig, lossless="sampling", needs=("tree_mask",),
          draft=True, budget="budget")
def run(req, config: DySpecConfig):
    return speculative.decode(req, DySpecDrafter(req, config.budget, config.expand))
