"""TokenTree: draft tokens arranged as a tree, with the tensors a tree forward needs.

Node 0 is the root: the last committed token, not yet in the target's KV cache. Every other node
has a parent with a smaller index (topological order), so a chain is the tree whose parents are
[-1, 0, 1, 2, ...].
"""
from __future__ import annotations

from dataclasses import dataclass
import functools
from functools import cached_property

import torch


@dataclass(frozen=True, eq=False)
class TokenTree:
    tokens: torch.Tensor  # [N] long
    parents: torch.Tensor  # [N] long, parents[0] == -1, parents[i] < i

    def __post_init__(self):
        if self.tokens.ndim != 1 or self.tokens.shape != self.parents.shape or len(self.tokens) == 0:
            raise ValueError("tokens and parents must be non-empty 1-D tensors of one length")
        par = self.parents.tolist()
        if par[0] != -1 or any(not (0 <= p < i) for i, p in enumerate(par) if i > 0):
            raise ValueError(f"parents must be [-1, ...] with parents[i] < i, got {par}")

    @classmethod
    def chain(cls, tokens: torch.Tensor | list[int]) -> "TokenTree":
        if len(tokens) == 1:  # a step that drafts nothing: one shared tree per token id
            return _root(int(tokens[0]))
        t = torch.as_tensor(tokens, dtype=torch.long)
        return cls(t, torch.arange(-1, len(t) - 1))

    @classmethod
    def from_lists(cls, tokens: list[int], parents: list[int]) -> "TokenTree":
        return cls(torch.tensor(tokens, dtype=torch.long), torch.tensor(parents, dtype=torch.long))

    def with_tokens(self, tokens: torch.Tensor) -> "TokenTree":
        """A tree of this one's shape holding other tokens [N]: it shares this tree's parents and
        its structure's cached properties (depths, children, the attention mask), computed once per
        shape instead of once per step, and skips the validation this shape already passed."""
        if tokens.shape != self.tokens.shape:
            raise ValueError(f"a tree of {len(self)} nodes needs {len(self)} tokens, got {tuple(tokens.shape)}")
        tree = object.__new__(TokenTree)
        tree.__dict__.update({name: getattr(self, name) for name in STRUCTURE}, tokens=tokens, parents=self.parents)
        return tree

    def __len__(self) -> int:
        return self.size

    @cached_property
    def size(self) -> int:  # len(self), read every step (a tensor's len costs a microsecond)
        return len(self.tokens)

    @cached_property
    def root(self) -> int:  # tokens[0] as an int
        return int(self.tokens[0])

    @cached_property
    def parent_list(self) -> list[int]:
        return self.parents.tolist()

    @cached_property
    def is_chain(self) -> bool:
        return self.parent_list == list(range(-1, len(self) - 1))

    @cached_property
    def depths(self) -> torch.Tensor:  # [N] long, root at depth 0
        d = [0] * len(self)
        for i, p in enumerate(self.parent_list[1:], start=1):
            d[i] = d[p] + 1
        return torch.tensor(d, dtype=torch.long)

    @cached_property
    def children(self) -> list[list[int]]:
        """children[i]: node indices whose parent is i, in index (draw) order."""
        ch: list[list[int]] = [[] for _ in range(len(self))]
        for i, p in enumerate(self.parent_list[1:], start=1):
            ch[p].append(i)
        return ch

    def positions(self, base: int) -> torch.Tensor:
        """Absolute position ids when the root sits at position `base`. [N]"""
        return base + self.depths

    @cached_property
    def attention_mask(self) -> torch.Tensor:
        """[N, N] bool: mask[i, j] is True when j is i or an ancestor of i."""
        n = len(self)
        m = torch.eye(n, dtype=torch.bool)
        for i, p in enumerate(self.parent_list[1:], start=1):
            m[i] |= m[p]
        return m

    def path_to(self, node: int) -> list[int]:
        """Node indices from the root down to `node`, inclusive."""
        path = []
        while node != -1:
            path.append(node)
            node = self.parent_list[node]
        return path[::-1]

    def leaves(self) -> list[int]:
        return [i for i, c in enumerate(self.children) if not c]

    def paths(self) -> list[list[int]]:
        """All root-to-leaf paths, as node indices."""
        return [self.path_to(leaf) for leaf in self.leaves()]


# TokenTree's cached properties that depend on its shape alone (with_tokens shares them)
STRUCTURE = ("size", "parent_list", "is_chain", "depths", "children", "attention_mask")


@functools.lru_cache(maxsize=1 << 16)
def _root(token: int) -> TokenTree:
    """The tree of a root alone (trees are immutable, so steps may share it)."""
    return TokenTree(torch.tensor([token]), torch.tensor([-1]))


@dataclass(frozen=True, eq=False)
class ExtraNodes:
    """Nodes forwarded with a draft tree but never verified, accepted or committed (PPD's prompt
    tokens): the target scores them in the same forward and the drafter reads their logits.
    `full` is the tree followed by the extra nodes (its first len(tree) nodes are the tree's, so a
    parent still precedes its children); `embeds` [E, H] are the extra nodes' input embeddings (the
    tree's own nodes are embedded from their tokens by the target). full.tokens of an extra node
    only names it in the target's cache bookkeeping until the commit drops it."""

    full: TokenTree
    embeds: torch.Tensor  # [E, H]


@dataclass(frozen=True, eq=False)
class Draft:
    """What a drafter proposes: a tree rooted at the last committed token, and, when sampling,
    q[i] = the processed draft distribution node i's children were drawn from (zeros at leaves).
    `extra`: nodes forwarded with the tree that are never accepted (ExtraNodes)."""

    tree: TokenTree
    q: torch.Tensor | None = None  # [N, V]
    extra: ExtraNodes | None = None
