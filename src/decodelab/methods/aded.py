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

Choices where the paper gives no detail (swept in the bench): the constants above
(budget 8, depth 8, branch 4, c_puct 1.0, topk 4; budget 8 was the fastest of 4, 8 and 24
on 2 CPU cores with the zoo code model in `decodelab bench`); sqrt(N(s) + 1) instead of sqrt(N(s)) so the
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

from ..core.tree import Draft, TokenTree
from ..loops import speculative
from ..options import Options, option
from ..registry import register

_KEEP, _PRUNE_AT = 16, 32


@dataclass(frozen=True, kw_only=True)
class ADEDConfig(Options):
    budget: int = option(8, "draft nodes per step (below the root)", lo=1, hi=256)
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
    def __init__(self, matrix: TrigramMatrix, config: ADEDConfig):
        self.matrix, self.config = matrix, config
        self._seen = 0  # context tokens already folded into the matrix
        self._before_root = -1  # the token before the root of the last draft

    def _fold(self, ctx: list[int]) -> None:
        for j in range(max(self._seen, 1), len(ctx)):
            self.matrix.add(ctx[j - 2] if j >= 2 else -1, ctx[j - 1], ctx[j], 1.0)
        self._seen = len(ctx)

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        c, ids = self.config, ctx.tolist()
        self._fold(ids)
        self._before_root = ids[-2] if len(ids) > 1 else -1
        # search tree: token, parent, depth, prior P, path value, visits N, value sum W, children,
        # open = may still lead to a node not yet drafted
        tok, par, dep, prior, val = [ids[-1]], [-1], [0], [1.0], [1.0]
        n, w, kids, open_ = [0], [0.0], [None], [min(c.depth, max_depth) > 0]
        draft_of = {0: 0}  # search node -> draft node, in the order nodes join the draft
        cap = min(c.depth, max_depth)
        while open_[0] and len(draft_of) <= c.budget:
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
        tree = TokenTree.from_lists([tok[s] for s in order], [draft_of.get(par[s], -1) for s in order])
        return Draft(tree)

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
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
    return speculative.decode(req, PUCTDrafter(matrix(req, config), config))
