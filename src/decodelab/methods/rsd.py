"""RSD: Recursive Speculative Decoding (Jeon et al. 2024, "Recursive Speculative Decoding:
Accelerating LLM Inference via Sampling Without Replacement", arXiv 2402.14160).

Notation: p = target, q = draft, both processed by the same SamplingConfig. The draft tree's
siblings are drawn WITHOUT replacement from q and verified by recursive rejection sampling
(core.verify.rejection_verify): siblings in draw order, p_{k+1} = norm(max(p_k - q_k, 0)),
q_{k+1} = q_k without x_k, renormalised. Lossless for sampling and greedy.

- rsd_c ("constant branching"): `branches` = "b1xb2x...xbL" (or "b1,b2,...") children per node at depth 1..L, each
  node's children drawn by Gumbel-top-k on log q. Tree size b1 + b1 b2 + ... tokens.
- rsd_s ("stochastic beam"): stochastic beam search (core.sbs) of `width` W beams and `depth` L;
  the tree is the union of the kept beams' prefixes, so unlikely branches are truncated early and
  the tree has at most W nodes per depth (W L tokens): the target budget is fixed by W and L.

Greedy decoding uses the deterministic counterparts (top-k children; plain beam search) and greedy
tree verification, so the output equals the target's greedy output.
Tree size: `branches="auto"` (rsd_c's default) drafts two chains from the root's two children
("2x1x...x1") and rsd_s's default `depth="auto"` keeps `width` beams (default 2); in both the
number of levels L is chosen before each step by core.costs.AutoLength, as sps's gamma, from the
target's measured forward cost of a step of width * L draft tokens, the draft's forward cost per
level, the acceptance measured so far per depth and the steps' measured times, down to a plain
step (and rests) when no tree pays. The paper's trees (rsd_c 3x2x2x1, 33 draft tokens; rsd_s
width 4, depth 4) are sized for a GPU, where extra tokens per forward are almost free; on a CPU
they lose: zoo:code-target-l with zoo:code-draft on llama.cpp, HumanEval, interleaved A/B, median
per prompt x greedy: rsd_c 3x2x2x1 0.38, 2x1x1x1 0.74; rsd_s 4x4 0.57, 2x3 0.78.
Fixed target budget B (the bench's axis, RSD's point): rsd_c drafts two chains of (B - 1) // 2
tokens ("2x1x...x1"); rsd_s keeps a given width (or depth) and fits the other, else W = 2, so
that W L <= B - 1.
Deviations: (1) the draft scores each depth's new nodes by re-forwarding the whole tree drawn so
far with a tree mask (one draft forward per depth, as in the paper, but O(L * tree) draft tokens
instead of O(tree): our adapters' tree masks cover only the tokens of one forward). (2) The
paper's RSD-S also forwards the last depth's beams through the draft; we do not, since their
distributions are never used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..core.costs import AutoLength
from ..core.sampling import gumbel_top_k
from ..core.sbs import sbs_step
from ..core.tree import Draft, TokenTree
from ..errors import DecodeLabError
from ..loops import speculative
from ..loops.drafting import AutoLevels, DraftModelDrafter, auto_levels, stack_q
from ..options import Options, option
from ..registry import register


_MAX_TREE = 256  # draft tokens per step, at most


@dataclass(frozen=True, kw_only=True)
class RSDCConfig(Options):
    branches: str = option("auto", "children per node at depth 1, 2, ... ('3x2x2x1' or '3,2,2,1'), or 'auto': two "
                                   "chains, their length chosen per step from measured costs and acceptance")

    def validate(self):
        if self.branches == "auto":
            return
        try:
            ok = all(b >= 1 for b in self.branching)
        except ValueError:
            ok = False
        if not ok:
            raise DecodeLabError(f"branches must be positive integers joined by 'x' or ',' such as '3x2x2x1', "
                                 f"got '{self.branches}'")
        if tree_size(self.branching) > _MAX_TREE:
            raise DecodeLabError(f"branches '{self.branches}' make a tree of {tree_size(self.branching)} draft "
                                 f"tokens; at most {_MAX_TREE}")

    @property
    def branching(self) -> list[int]:
        return [int(b) for b in re.split(r"[x,]", self.branches)]


def tree_size(branching: list[int]) -> int:
    """Draft tokens of a constant-branching tree: b1 + b1 b2 + ... + b1 ... bL."""
    size, level = 0, 1
    for b in branching:
        level *= b
        size += level
        if size > _MAX_TREE:
            break
    return size


@dataclass(frozen=True, kw_only=True)
class RSDSConfig(Options):
    width: int = option(2, "beams kept per depth", lo=1, hi=64)
    depth: int | None = option(None, "draft tokens per beam; auto: chosen per step from measured costs and "
                                     "acceptance", lo=1, hi=64, auto=True)

    def validate(self):
        if self.depth is not None and self.width * self.depth > _MAX_TREE:
            raise DecodeLabError(f"width x depth = {self.width * self.depth} draft tokens; at most {_MAX_TREE}")


def rsd_c_budget(b: int, given: dict) -> dict:
    """Fixed budget B: two chains of (B - 1) // 2 tokens (one chain when B = 2), the narrowest
    tree that still draws siblings without replacement."""
    return {"branches": "1" if b == 2 else "2" + "x1" * ((b - 1) // 2 - 1)}


def rsd_s_budget(b: int, given: dict) -> dict:
    """Fixed budget B: W beams of depth L with W L <= B - 1; keeps a given width or depth, else W = 2."""
    fixed = {k: given[k] for k in ("width", "depth") if k in given}
    if len(fixed) == 1 and next(iter(fixed.values())) > b - 1:
        raise DecodeLabError(f"rsd_s: {', '.join(f'{k}={v}' for k, v in fixed.items())} does not fit fixed_budget={b}")
    if "depth" in fixed:
        return {"width": (b - 1) // fixed["depth"]}
    width = fixed.get("width", 2 if b > 2 else 1)
    return {"depth": (b - 1) // width} | ({} if "width" in fixed else {"width": width})


class _TreeBuilder:
    """A draft tree under construction: tokens, parents and the q row of every expanded node."""

    def __init__(self, root: int):
        self.tokens, self.parents, self.q_rows = [root], [-1], {}

    def add(self, token: int, parent: int) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        return len(self.tokens) - 1

    def draft(self, sampling: bool, vocab: int) -> Draft:
        tree = TokenTree.from_lists(self.tokens, self.parents)
        return Draft(tree, stack_q(self.q_rows, len(tree), vocab) if sampling else None)


class RSDCDrafter(AutoLevels, DraftModelDrafter):
    """branching None: two chains ("2x1x...x1"), their levels from `auto`."""

    def __init__(self, req, branching: list[int] | None, auto: AutoLength | None = None):
        super().__init__(req)
        self.branching, self.auto = branching, auto

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        b = _TreeBuilder(int(ctx[-1]))
        if self.auto is not None:
            n = self._auto_depth(ctx, max_depth)
            levels = [2] + [1] * (n - 1) if n else []
        else:
            levels = self.branching[:max_depth]
        if not levels:
            return b.draft(False, 0)
        frontier, dists = [0], self.q(self.root_logits(ctx))[None]  # [1, V]
        for d, k in enumerate(levels):
            new = []
            for node, q in zip(frontier, dists):
                b.q_rows[node] = q
                for x in self._children(q, k).tolist():
                    new.append(b.add(x, node))
            frontier = new
            if d + 1 < len(levels):
                dists = self.q(self.score_tree(len(ctx), b.tokens, b.parents)[[i - 1 for i in frontier]])
        return b.draft(self.sampling.do_sample, dists.shape[-1])

    def _children(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """k distinct children of a node: Gumbel-top-k on log q (sampling) or the top k (greedy)."""
        if self.sampling.do_sample:
            return gumbel_top_k(q.log(), k, self.rng)
        return torch.topk(q, min(k, q.shape[-1])).indices


class RSDSDrafter(AutoLevels, DraftModelDrafter):
    """depth None: from `auto`, per step."""

    def __init__(self, req, width: int, depth: int | None, auto: AutoLength | None = None):
        super().__init__(req)
        self.width, self.depth, self.auto = width, depth, auto

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        b = _TreeBuilder(int(ctx[-1]))
        depth = self._auto_depth(ctx, max_depth) if self.auto is not None else min(self.depth, max_depth)
        if depth == 0:
            return b.draft(False, 0)
        beams = [0]  # tree node of each live beam
        phi = torch.zeros(1, dtype=torch.float64)  # [B] log q of each beam
        g = torch.zeros(1, dtype=torch.float64)  # [B] perturbed values
        dists = self.q(self.root_logits(ctx))[None]  # [B, V]
        rng = self.rng if self.sampling.do_sample else None
        for d in range(depth):
            for node, q in zip(beams, dists):
                b.q_rows[node] = q
            rows, toks, phi, g = sbs_step(phi, g, dists.log(), self.width, rng)
            # in G order, so each parent's children get indices in their draw order
            beams = [b.add(x, beams[r]) for r, x in zip(rows.tolist(), toks.tolist())]
            if d + 1 < depth:
                dists = self.q(self.score_tree(len(ctx), b.tokens, b.parents)[[i - 1 for i in beams]])
        return b.draft(self.sampling.do_sample, dists.shape[-1])


@register("rsd_c", family="speculative", config=RSDCConfig, lossless="sampling", needs=("tree_mask",),
          draft=True, budget=rsd_c_budget)
def run_c(req, config: RSDCConfig):
    if config.branches == "auto":
        return speculative.decode(req, RSDCDrafter(req, None, auto_levels(req, "rsd_c", width=2)))
    return speculative.decode(req, RSDCDrafter(req, config.branching))


@register("rsd_s", family="speculative", config=RSDSConfig, lossless="sampling", needs=("tree_mask",),
          draft=True, budget=rsd_s_budget)
def run_s(req, config: RSDSConfig):
    auto = auto_levels(req, f"rsd_s|{config.width}", width=config.width) if config.depth is None else None
    return speculative.decode(req, RSDSDrafter(req, config.width, config.depth, auto))
