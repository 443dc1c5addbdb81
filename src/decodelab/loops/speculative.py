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

Rests: a drafter may also have `rest()`, asked before the first step and after every step it
observed, which names a number of plain steps to take next without asking it (core.costs.AutoLength
decides this when no draft could pay at the measured costs): those steps are the plain steps it
would have been asked for, minus its bookkeeping, which on a small llama.cpp model costs as much
as a tenth of a step. A greedy plain step hands the adapter's numpy logits on unconverted.

Extra nodes (Draft.extra, core.tree.ExtraNodes; PPD's prompt tokens): a draft may carry nodes that
are forwarded with the tree, as input embeddings (forward(..., embeds=...), the "embeds"
capability), but are never verified, accepted or committed: verification reads the tree's rows
only, the commit keeps the accepted path (tree nodes only), and observe() gets the logits of every
forwarded row, [N + E, V], so the drafter reads the extra nodes' rows N.. (without extra nodes it
gets [N, V] as always).
"""
from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np
import torch

from ..core.sampling import check_finite, greedy_ids
from ..core.tree import Draft, TokenTree
from ..core.verify import greedy_verify, rejection_verify
from ..models.base import forward_one
from .common import emit, processor, start


class Drafter(Protocol):
    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        """A tree rooted at ctx[-1] whose paths are at most max_depth tokens below the root."""

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        """Learn from a verified step: accepted node path (root first) and target logits [N, V]."""

    # optional: rest() -> int, asked before the first step and after every step it observed: how many
    # plain steps to take next without calling propose or observe (it would draft nothing in them:
    # core.costs.AutoLength.rest)


def decode(req, drafter: Drafter) -> Iterator[list[int]]:
    target = req.target
    start(target, req.prompt)
    # the context lives in a numpy buffer that steps append to, and drafters get a view of its
    # filled part: a torch.cat and a torch.tensor per step cost more Python than a llama.cpp
    # forward of a small model can spare (views of a prefix stay valid: the buffer only grows)
    n = len(req.prompt)
    buf = np.empty(n + req.max_new_tokens + 1, np.int64)
    buf[:n] = req.prompt.numpy()
    ids = torch.from_numpy(buf)
    new = 0
    probs = processor(req)
    rest = getattr(drafter, "rest", None)
    resting = rest() if rest is not None else 0
    while True:
        if resting:  # a plain step that the drafter sits out
            resting -= 1
            tree, path = TokenTree.chain([int(buf[n - 1])]), [0]
            tokens, logits = plain_step(req, tree, ids, n, probs)
        else:
            ctx = ids[:n]
            room = req.max_new_tokens - new - 1  # the bonus token always comes on top of the draft
            if target.max_length is not None:
                room = min(room, target.max_length - n)
            draft = drafter.propose(ctx, max(room, 0))
            tree = draft.tree
            if tree.root != buf[n - 1]:
                raise RuntimeError(f"{type(drafter).__name__} proposed a tree not rooted at the last token")
            if len(tree) == 1 and draft.extra is None:  # nothing drafted: a plain decoding step
                tokens, logits = plain_step(req, tree, ids, n, probs)
                path, logits = [0], torch.as_tensor(logits)
            else:
                if int(tree.depths.max()) > max(room, 0):
                    raise RuntimeError(f"{type(drafter).__name__} proposed a tree deeper than allowed")
                path, tokens, logits = verify_step(req, draft, ctx, probs)
            drafter.observe(draft, path, logits)
            if rest is not None:
                resting = rest()
        out, done = emit(req, tokens, new, logits[path] if req.logprobs is not None else None, tree, path)
        buf[n:n + len(out)] = out
        n += len(out)
        new += len(out)
        yield out
        if done:
            return


def plain_step(req, tree: TokenTree, ids: torch.Tensor, n: int, probs) -> tuple[list[int], object]:
    """A step without draft tokens (tree: the root alone, ids[n - 1]), taken as the autoregressive
    loop takes it: the root's forward at position n - 1, then its argmax, or the draw from p that
    rejection sampling makes at a leaf; nothing to verify or commit (the forward appended the root
    to the cache). ids: the context so far (its first n tokens). -> ([token], logits [1, V]: a numpy
    array from adapters whose one-token forward gives one, which a greedy step does not convert)"""
    x = forward_one(req.target, tree.root, n - 1)
    if req.greedy:
        return greedy_ids(x), x
    logits = torch.as_tensor(x)
    check_finite(logits)
    contexts = [ids[:n].tolist()] if req.sampling.history else None
    return [rejection_verify(tree, probs(logits, contexts), None, req.rng)[1]], logits


def verify_step(req, draft: Draft, ctx: torch.Tensor, probs) -> tuple[list[int], list[int], torch.Tensor]:
    """Forward the draft, verify it, commit the accepted path. -> (path, its tokens + the bonus,
    the logits of every forwarded row [N (+ E), V])"""
    tree, target = draft.tree, req.target
    step = forward(target, draft, len(ctx) - 1)
    logits = step.logits[:len(tree)]  # [N, V]: the tree's rows (extra nodes' rows follow)
    if req.greedy:
        path, bonus = greedy_verify(tree, logits)  # checks the argmax logits for NaN/inf
    else:
        check_finite(logits)
        contexts = node_contexts(ctx, tree) if req.sampling.history else None
        path, bonus = rejection_verify(tree, probs(logits, contexts), draft.q, req.rng)
    target.commit(path)
    return path, tree.tokens[path[1:]].tolist() + [bonus], step.logits


def forward(target, draft, base: int):
    """The target forward of a draft at root position `base`: the tree alone, or the tree followed
    by its extra nodes (tree nodes embedded from their tokens, extra nodes from draft.extra)."""
    tree, extra = draft.tree, draft.extra
    if extra is None:
        return target.forward(tree.tokens, tree.positions(base),
                              tree_mask=None if tree.is_chain else tree.attention_mask)
    full = extra.full
    if len(full) != len(tree) + len(extra.embeds):
        raise RuntimeError("a draft's extra nodes must follow its tree in `full`, one embedding each")
    own = target.embed(tree.tokens)  # [N, H]
    embeds = torch.cat([own, extra.embeds.to(own.device, own.dtype)])
    return target.forward(full.tokens, full.positions(base), tree_mask=full.attention_mask, embeds=embeds)


def node_contexts(ctx: torch.Tensor, tree) -> list[list[int]]:
    """The tokens before each node's children: the committed context (ending with the root) and
    the node's path below the root."""
    base, tokens = ctx.tolist(), tree.tokens.tolist()
    return [base + [tokens[i] for i in tree.path_to(node)[1:]] for node in range(len(tree))]
