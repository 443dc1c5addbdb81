"""Stochastic beam search: conditional Gumbels, deterministic beam search, and that it samples
sequences without replacement from q."""
import math
from collections import Counter

import torch

from decodelab.core.sbs import conditional_gumbel, sbs_step


def test_conditional_gumbel_max_equals_parent_and_keeps_order():
    g_tilde = torch.tensor([[0.5, -1.0, 2.0, -math.inf], [-3.0, -2.0, -2.5, -4.0]])
    parent = torch.tensor([1.0, -7.0])
    before = g_tilde.clone()
    g = conditional_gumbel(g_tilde, parent)
    assert torch.equal(g_tilde, before)  # does not modify its input
    assert torch.allclose(g.max(dim=-1).values, parent.double())
    assert g[0, 3] == -math.inf
    for row, row_t in zip(g, g_tilde):
        fin = torch.isfinite(row_t)
        assert torch.equal(torch.argsort(row[fin]), torch.argsort(row_t[fin]))  # monotone per row
        assert bool((row[fin] <= row.max()).all())


def test_conditional_gumbel_is_stable_for_far_values():
    g = conditional_gumbel(torch.tensor([[0.0, -200.0, -1e-9]]), torch.tensor([-300.0]))
    assert bool(torch.isfinite(g).all()) and float(g.max()) == -300.0


def test_sbs_without_generator_is_beam_search():
    logq = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0], [0.5, 3.0, -1.0]]), dim=-1)
    phi = torch.tensor([-0.1, -2.0])
    rows, toks, new_phi, _ = sbs_step(phi, phi, logq, 3, None)
    scores = (phi[:, None] + logq).reshape(-1)
    best = torch.topk(scores, 3).indices
    assert rows.tolist() == (best // 3).tolist() and toks.tolist() == (best % 3).tolist()
    assert torch.allclose(new_phi.float(), scores[best])


def test_sbs_width_capped_by_support():
    logq = torch.tensor([[0.0, -math.inf, -math.inf]])
    rows, toks, _, _ = sbs_step(torch.zeros(1), torch.zeros(1), logq, 4, torch.Generator().manual_seed(0))
    assert toks.tolist() == [0] and rows.tolist() == [0]


def _two_step(q1, q2, width, gen):
    """Two SBS depths from a root: q1 [V] at the root, q2 [V, V] after each first token."""
    phi, g = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    rows, t1, phi, g = sbs_step(phi, g, q1.log()[None], width, gen)
    rows2, t2, _, _ = sbs_step(phi, g, q2[t1].log(), width, gen)
    return [(int(t1[r]), int(x)) for r, x in zip(rows2, t2)]


def test_sbs_draws_sequences_without_replacement_from_q():
    """The best beam is a draw from q(x1, x2); the second is a draw from q without the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny ops: extra threads only contend
    try:
        _check_without_replacement()
    finally:
        torch.set_num_threads(threads)


def _check_without_replacement():
    gen = torch.Generator().manual_seed(0)
    q1 = torch.tensor([0.5, 0.3, 0.2])
    q2 = torch.softmax(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)) * 1.5, dim=-1)
    joint = {(a, b): float(q1[a] * q2[a, b]) for a in range(3) for b in range(3)}
    n = 3000
    firsts, pairs = Counter(), Counter()
    for _ in range(n):
        beams = _two_step(q1, q2, 2, gen)
        assert len(set(beams)) == len(beams) == 2
        firsts[beams[0]] += 1
        pairs[tuple(beams)] += 1
    tv1 = 0.5 * sum(abs(firsts[k] / n - v) for k, v in joint.items())
    exact2 = {(a, b): joint[a] * joint[b] / (1 - joint[a]) for a in joint for b in joint if a != b}
    tv2 = 0.5 * sum(abs(pairs[k] / n - v) for k, v in exact2.items())
    iid = lambda dist: 0.5 * sum(math.sqrt(2 * v * (1 - v) / (math.pi * n)) for v in dist.values())  # noqa: E731
    assert tv1 < 2 * iid(joint), tv1
    assert tv2 < 2 * iid(exact2), tv2
