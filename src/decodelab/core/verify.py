"""Verification of a draft tree against the target's distributions.

Glossary: p = target distribution at a node (for the node's children), q = draft distribution the
node's children were drawn from, accepted = draft nodes kept, bonus = the one extra token taken
from the target after the last accepted node. A verifier returns (path, bonus): `path` is the
list of accepted node indices starting at the root (node 0), `bonus` an int token id. The tokens
committed this step are tokens[path[1:]] followed by bonus, so at least one token per forward.
"""
from __future__ import annotations

import torch

from .sampling import greedy_ids
from .tree import TokenTree


def greedy_verify(tree: TokenTree, logits: torch.Tensor) -> tuple[list[int], int]:
    """Longest root path whose every child equals the target's argmax at its parent.

    logits: [N, V] target logits at each tree node. Lossless for greedy decoding: the committed
    tokens are exactly the target's own greedy continuation. Refuses NaN/inf at an argmax.
    """
    best = greedy_ids(logits)  # [N]
    tokens = tree.tokens.tolist()
    path, node = [0], 0
    while True:
        nxt = next((c for c in tree.children[node] if tokens[c] == best[node]), None)
        if nxt is None:
            return path, best[node]
        path.append(nxt)
        node = nxt


def rejection_verify(
    tree: TokenTree,
    p: torch.Tensor,
    q: torch.Tensor | None,
    generator: torch.Generator,
) -> tuple[list[int], int]:
    """Recursive rejection sampling over the tree (Jeon et al. 2024, arXiv 2402.14160).

    p: [N, V] processed target probabilities at each node.
    q: [N, V] processed draft probabilities each node's children were drawn from, siblings drawn
       WITHOUT replacement in index order. None means every child is a deterministic guess
       (q = one-hot at that child), which is still exact.
    At a node, siblings x_1..x_k are tried in order with p_1 = p, q_1 = q: accept x_k with
    probability min(1, p_k(x_k) / q_k(x_k)); on rejection p_{k+1} = norm(max(p_k - q_k, 0)) and
    q_{k+1} = q_k without x_k, renormalised. Accepting descends into x_k; when every sibling is
    rejected (or the node is a leaf) the bonus token is drawn from the last residual. With one
    child per node this is standard speculative sampling (Leviathan et al. 2023), so chains use it
    too. The output is distributed exactly as p.
    """
    tokens = tree.tokens.tolist()
    path, node = [0], 0
    while True:
        p_k = p[node].double()  # [V]
        q_k = q[node].double() if q is not None else None
        accepted = None
        for child in tree.children[node]:
            x = tokens[child]
            q_cur = q_k if q_k is not None else _one_hot(x, p_k)
            ratio = 1.0 if q_cur[x] <= 0 else min(1.0, float(p_k[x] / q_cur[x]))
            u = torch.rand((), generator=generator, dtype=torch.float64, device=p_k.device)
            if float(u) < ratio:
                accepted = child
                break
            p_k = _normalise(torch.clamp(p_k - q_cur, min=0.0), fallback=p_k)
            if q_k is not None:
                q_k = q_k.clone()
                q_k[x] = 0.0
                q_k = _normalise(q_k, fallback=q_k)
        if accepted is None:
            bonus = torch.multinomial(p_k.float(), 1, generator=generator)
            return path, int(bonus)
        path.append(accepted)
        node = accepted


def _one_hot(x: int, like: torch.Tensor) -> torch.Tensor:
    v = torch.zeros_like(like)
    v[x] = 1.0
    return v


def _normalise(v: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    s = v.sum()
    return v / s if s > 0 else fallback
