"""Stochastic Beam Search (Kool, van Hoof and Welling 2019, "Stochastic Beams and Where to Find
Them: The Gumbel-Top-k Trick for Sampling Sequences Without Replacement", arXiv 1903.06059).

Every partial sequence y carries phi(y) = log q(y) and a perturbed value G(y). The root has
phi = G = 0. A child y + x gets phi(y + x) = phi(y) + log q(x | y) and a Gumbel G~ = phi + Gumbel(0)
that is then conditioned so that the children's maximum equals the parent's G:
    G(y + x) = -log(exp(-G(y)) - exp(-Z) + exp(-G~(y + x))),   Z = max_x G~(y + x)
(computed in the stable form of the paper's appendix, in float64). Keeping the W children with the
largest G at every depth draws W sequences WITHOUT replacement from q; the children of one parent,
ordered by G, are that parent's Gumbel-top-k draw, i.e. samples without replacement in draw order.
Whether a child survives depends only on G values, which are independent of which token it is
(max and argmax of Gumbels are independent): that is what keeps recursive rejection sampling
exact on SBS trees (Jeon et al. 2024, arXiv 2402.14160). With no generator it is plain
(deterministic) beam search on log q.
"""
from __future__ import annotations

import torch


def conditional_gumbel(g_tilde: torch.Tensor, parent_g: torch.Tensor) -> torch.Tensor:
    """Shift Gumbels so that each row's maximum equals parent_g (Kool et al. 2019, appendix B.3).

    g_tilde: [B, V] perturbed log-probabilities of the children (-inf = impossible child);
    parent_g: [B] the parents' values. Returns [B, V] float64; does not modify its inputs.
    """
    g_tilde = g_tilde.double()
    t = parent_g.double()[:, None]  # [B, 1]
    z = g_tilde.max(dim=-1, keepdim=True).values  # [B, 1]
    # v = T - G~ + log(1 - exp(G~ - Z)); G = T - relu(v) - log1p(exp(-|v|))
    v = t - g_tilde + _log1mexp(g_tilde - z)
    g = t - torch.relu(v) - torch.log1p(torch.exp(-v.abs()))
    g = torch.where(torch.isinf(v) & (v < 0), t.expand_as(g), g)  # the argmax child: G = T exactly
    return torch.where(torch.isfinite(g_tilde), g, torch.full_like(g, -torch.inf))


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate near 0 and for very negative a (-inf at a = 0)."""
    return torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def sbs_step(phi: torch.Tensor, g: torch.Tensor, logq: torch.Tensor, width: int,
             generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One depth of stochastic beam search.

    phi: [B] log q of each live beam; g: [B] its perturbed value; logq: [B, V] next-token log q
    per beam (-inf where filtered). Keeps the `width` children with the largest G.
    Returns (beam index [W'], token [W'], phi [W'], g [W']) sorted by G descending, W' <= width
    (fewer when fewer children are possible). generator=None: deterministic beam search (G = phi).
    """
    child_phi = phi.double()[:, None] + logq.double()  # [B, V]
    if generator is None:
        child_g = child_phi
    else:
        u = torch.rand(child_phi.shape, generator=generator, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
        child_g = conditional_gumbel(child_phi + gumbel, g)
    flat = child_g.reshape(-1)  # [B * V]
    k = min(width, int(torch.isfinite(flat).sum()))
    top = torch.topk(flat, k).indices  # sorted by G descending
    vocab = logq.shape[-1]
    rows, tokens = top // vocab, top % vocab
    return rows, tokens, child_phi.reshape(-1)[top], flat[top]
