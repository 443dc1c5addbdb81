"""Draft sizes from measured costs: how many tokens to draft per step so that tokens per second is
highest, given the target's forward cost curve (models/costs.py), what a drafted token costs to
make, and the acceptance rate measured so far in this generation.

Model (Leviathan et al. 2023, section 3): each drafted token is accepted with probability a,
independently, until the first rejection, so a draft of g tokens commits
E(g) = 1 + a + ... + a^g tokens per step (the bonus included), and a step costs
T(g) = c(g + 1) + g * d, with c(n) the target's forward of n tokens and d the cost of drafting one
token (a draft model's 1-token forward; ~0 for lookup drafts). The best g maximises E(g) / T(g);
g = 0 (plain decoding) whenever no draft beats c(1).

a is estimated online: a Beta(PRIOR_ACCEPT, PRIOR_REJECT) prior (a = 0.6, worth 5 positions)
updated with every verified position (accepted positions count toward a, the first rejected one
against it). While g = 0 nothing is verified, so every PROBE_EVERY-th step drafts one token to keep
the estimate current.
"""
from __future__ import annotations

PRIOR_ACCEPT, PRIOR_REJECT = 3.0, 2.0
PROBE_EVERY = 16


def expected_tokens(a: float, g: int) -> float:
    """E(g): tokens committed per step with g drafted tokens at acceptance rate a."""
    return float(g + 1) if a >= 1.0 else (1.0 - a ** (g + 1)) / (1.0 - a)


def best_length(a: float, target: list[float], per_token: float, max_len: int) -> int:
    """argmax over g in [0, max_len] of E(g) / (target[g + 1] + g * per_token); target[n] is the
    time of an n-token forward (target[0] unused), so g <= len(target) - 2."""
    best, best_rate = 0, 1.0 / target[1]
    for g in range(1, min(max_len, len(target) - 2) + 1):
        rate = expected_tokens(a, g) / (target[g + 1] + g * per_token)
        if rate > best_rate:
            best, best_rate = g, rate
    return best


class AutoLength:
    """Per-generation draft length: `length(max_len)` before a step, `update(drafted, accepted)`
    after it. target: the target's cost curve; per_token: the cost of drafting one token."""

    def __init__(self, target: list[float], per_token: float = 0.0):
        self.target, self.per_token = target, per_token
        self.accepted, self.rejected = PRIOR_ACCEPT, PRIOR_REJECT
        self.idle = 0  # steps in a row without drafting

    @property
    def rate(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def length(self, max_len: int) -> int:
        g = best_length(self.rate, self.target, self.per_token, max_len)
        if g == 0 and max_len > 0:
            self.idle += 1
            if self.idle % PROBE_EVERY == 0:
                return 1
        else:
            self.idle = 0
        return g

    def update(self, drafted: int, accepted: int) -> None:
        """A verified step: `accepted` of `drafted` positions, the rest cut at the first rejection."""
        self.accepted += accepted
        self.rejected += 1 if accepted < drafted else 0
