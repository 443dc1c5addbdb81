"""The speculative loop: draft, verify in one target forward, commit, observe. Methods supply a
Drafter; this loop owns verification, acceptance, the KV-cache commit and the counts.

Each step forwards the tree [root = last committed token, draft nodes...] at positions
base + depth, with a tree attention mask unless the draft is a chain. Greedy runs use greedy
verification (the output equals the target's greedy output); sampling runs use recursive
rejection sampling, which is exact for chains (standard speculative sampling) and for trees
whose siblings were drawn without replacement from q or are deterministic guesses (q = None).
The sampling processors that read the context (penalties, DRY) get each node's own context (the
committed tokens and the node's ancestors), so p at every node is exactly the distribution plain
sampling draws from after that prefix, and verification stays exact with them.
"""
from __future__ import annotations

from typing import Iterator, Protocol

import torch

from ..core.sampling import check_finite
from ..core.tree import Draft
from ..core.verify import greedy_verify, rejection_verify
from .common import emit, processor, start


class Drafter(Protocol):
    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        """A tree rooted at ctx[-1] whose paths are at most max_depth tokens below the root."""

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        """Learn from a verified step: accepted node path (root first) and target logits [N, V]."""


def decode(req, drafter: Drafter) -> Iterator[list[int]]:
    target = req.target
    start(target, req.prompt)
    ctx = req.prompt.clone()
    new = 0
    probs = processor(req)
    while True:
        room = req.max_new_tokens - new - 1  # the bonus token always comes on top of the draft
        if target.max_length is not None:
            room = min(room, target.max_length - len(ctx))
        draft = drafter.propose(ctx, max(room, 0))
        tree = draft.tree
        if int(tree.tokens[0]) != int(ctx[-1]) or int(tree.depths.max()) > max(room, 0):
            raise RuntimeError(f"{type(drafter).__name__} proposed a tree not rooted at the last token "
                               "or deeper than allowed")
        step = target.forward(tree.tokens, tree.positions(len(ctx) - 1),
                              tree_mask=None if tree.is_chain else tree.attention_mask)
        check_finite(step.logits)
        if req.greedy:
            path, bonus = greedy_verify(tree, step.logits)
        else:
            contexts = node_contexts(ctx, tree) if req.sampling.history else None
            path, bonus = rejection_verify(tree, probs(step.logits, contexts), draft.q, req.rng)
        target.commit(path)
        drafter.observe(draft, path, step.logits)
        out, done = emit(req, tree.tokens[path[1:]].tolist() + [bonus], new, step.logits[path], tree, path)
        ctx = torch.cat([ctx, torch.tensor(out)])
        new += len(out)
        yield out
        if done:
            return


def node_contexts(ctx: torch.Tensor, tree) -> list[list[int]]:
    """The tokens before each node's children: the committed context (ending with the root) and
    the node's path below the root."""
    base, tokens = ctx.tolist(), tree.tokens.tolist()
    return [base + [tokens[i] for i in tree.path_to(node)[1:]] for node in range(len(tree))]
