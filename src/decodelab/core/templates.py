"""Static draft-tree templates: a fixed tree shape whose node i takes the ranks[i]-th candidate of
its parent's token, filled from a candidate table [V, k] in one gather per level.

A template is written as Medusa-style rank paths: [[0], [1], [0, 0]] is the root's top-1 and
top-2 candidates, and the top-1 candidate after the top-1 one. Nodes are stored level by level
(node 0 = root), so a parent always precedes its children and each level is one slice.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import cached_property

import torch

from .tree import TokenTree


def best_first_paths(n: int, rank_probs: list[float], max_depth: int) -> list[tuple[list[int], float]]:
    """The first n rank paths of a best-first search, each with its probability (the product of
    its ranks' probabilities): repeatedly take the frontier path with the highest product (ties:
    the lexicographically smaller path). The first k of them are the best k-node template, and
    their probabilities sum to its expected accepted length."""
    heap = [(-rank_probs[r], (r,)) for r in range(len(rank_probs))]
    heapq.heapify(heap)
    chosen = []
    while heap and len(chosen) < n:
        neg, path = heapq.heappop(heap)
        chosen.append((list(path), -neg))
        if len(path) < max_depth:
            for r, pr in enumerate(rank_probs):
                heapq.heappush(heap, (neg * pr, path + (r,)))
    return chosen


@dataclass(frozen=True, eq=False)
class TreeTemplate:
    parents: tuple[int, ...]  # [N], parents[0] == -1
    ranks: tuple[int, ...]  # [N], ranks[0] == -1: which candidate of the parent's token node i takes

    def __post_init__(self):
        if len(self.parents) != len(self.ranks) or not self.parents or self.parents[0] != -1:
            raise ValueError("a template needs a root (parent -1) and one rank per node")
        for i, (p, r) in enumerate(zip(self.parents[1:], self.ranks[1:]), start=1):
            if not 0 <= p < i or r < 0:
                raise ValueError(f"node {i}: parent {p} must precede it and rank {r} must be >= 0")
        d = self.depth_list
        if any(d[i] < d[i - 1] for i in range(1, len(d))):
            raise ValueError("template nodes must be ordered level by level")

    @classmethod
    def from_paths(cls, paths: list[list[int]]) -> "TreeTemplate":
        """Template from rank paths; every path's prefix must be a path too (or the root)."""
        ordered = sorted({tuple(p) for p in paths}, key=lambda p: (len(p), p))
        index = {(): 0}
        parents, ranks = [-1], [-1]
        for p in ordered:
            if not p or p[:-1] not in index:
                raise ValueError(f"template path {list(p)} has no parent path {list(p[:-1])}")
            index[p] = len(parents)
            parents.append(index[p[:-1]])
            ranks.append(p[-1])
        return cls(tuple(parents), tuple(ranks))

    @classmethod
    def best_first(cls, n: int, rank_probs: list[float], max_depth: int) -> "TreeTemplate":
        """The n-node template that maximises the expected accepted length when the rank-r
        candidate is the target's choice with probability rank_probs[r], independently per
        depth (best_first_paths)."""
        return cls.from_paths([path for path, _ in best_first_paths(n, rank_probs, max_depth)])

    def __len__(self) -> int:
        return len(self.parents)

    @cached_property
    def depth_list(self) -> list[int]:
        d = [0] * len(self.parents)
        for i, p in enumerate(self.parents[1:], start=1):
            d[i] = d[p] + 1
        return d

    @property
    def depth(self) -> int:
        return self.depth_list[-1]

    def level_counts(self) -> list[int]:
        """Draft nodes per level, level 1 first (the root is not counted)."""
        return [self.depth_list.count(level) for level in range(1, self.depth + 1)]

    @property
    def max_rank(self) -> int:
        return max(self.ranks)

    def truncate(self, max_depth: int) -> "TreeTemplate":
        """The nodes at depth <= max_depth (a prefix, since nodes are ordered by level)."""
        n = sum(1 for d in self.depth_list if d <= max_depth)
        return self if n == len(self) else TreeTemplate(self.parents[:n], self.ranks[:n])

    @cached_property
    def _levels(self) -> list[tuple[slice, torch.Tensor, torch.Tensor]]:
        """Per level: (node slice, parent indices [n], ranks [n])."""
        out, start = [], 1
        for count in self.level_counts():
            sl = slice(start, start + count)
            out.append((sl, torch.tensor(self.parents[sl]), torch.tensor(self.ranks[sl])))
            start += count
        return out

    @cached_property
    def shape(self) -> TokenTree:
        """The template's tree with placeholder tokens: its structure, for `TokenTree.with_tokens`."""
        return TokenTree(torch.zeros(len(self), dtype=torch.long), torch.tensor(self.parents))

    def fill(self, root: int, candidates: torch.Tensor) -> TokenTree:
        """The tree rooted at token `root` whose node i is candidates[token of parent, ranks[i]].

        candidates: [V, k] token ids, k > max rank. Does not modify its input.
        """
        tokens = torch.empty(len(self), dtype=torch.long)  # [N]
        tokens[0] = root
        for sl, parents, ranks in self._levels:
            tokens[sl] = candidates[tokens[parents], ranks]
        return self.shape.with_tokens(tokens)  # every tree of this template has its structure
