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
the estimate current. T(g) is corrected online by the steps' measured time (AutoLength).
"""
from __future__ import annotations

import time

PRIOR_ACCEPT, PRIOR_REJECT = 3.0, 2.0
PROBE_EVERY = 16
EMA = 0.2  # weight of the newest step time in a length's average
FLOOR = 0.25  # corrected step costs stay above this share of the measured curve


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
    after it. target: the target's cost curve; per_token: the cost of drafting one token.

    The curve leaves out what the step costs around the forwards (drafting, verifying and
    committing in Python: about 0.1-0.3 ms on a CPU, as much as a whole llama.cpp forward of a
    small model). So `length` also reads the clock: the time from one call to the next is the
    step just taken, kept per draft length (an exponential average), and the model's error is
    fitted as a + b g over the lengths seen (least squares; b = 0 while one length is seen) and
    added to T(g). The clock only steers the choice: nothing measured here is reported.
    clock=None: the curve alone decides."""

    def __init__(self, target: list[float], per_token: float = 0.0, clock=time.perf_counter):
        self.target, self.per_token, self.clock = target, per_token, clock
        self.accepted, self.rejected = PRIOR_ACCEPT, PRIOR_REJECT
        self.idle = 0  # steps in a row without drafting
        self.seen: dict[int, float] = {}  # draft length -> average seconds of a step with it
        self._last: tuple[float, int, bool] | None = None  # (clock at the last call, length chosen, first?)

    @property
    def rate(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def model(self, g: int) -> float:
        """Predicted seconds of a step drafting g tokens, before correction."""
        return self.target[g + 1] + g * self.per_token

    def correction(self) -> tuple[float, float]:
        """(a, b): the least-squares line through the seen lengths' errors (observed - model)."""
        pts = [(g, t - self.model(g)) for g, t in self.seen.items() if g + 1 < len(self.target)]
        if not pts:
            return 0.0, 0.0
        mg = sum(g for g, _ in pts) / len(pts)
        me = sum(e for _, e in pts) / len(pts)
        var = sum((g - mg) ** 2 for g, _ in pts)
        b = sum((g - mg) * (e - me) for g, e in pts) / var if var else 0.0
        return me - b * mg, max(b, 0.0)

    def length(self, max_len: int) -> int:
        now = self.clock() if self.clock is not None else None
        if self._last is not None and now is not None:
            t0, g0, first = self._last
            old = self.seen.get(g0)
            if not first:  # the first step also pays the draft's catching up on the prompt
                self.seen[g0] = (now - t0) if old is None else old + EMA * ((now - t0) - old)
        a, b = self.correction()
        # corrected costs, never below a quarter of the measured curve (a step faster than its
        # forward is noise, or a quieter machine than at measuring time)
        costs = [max(c + a + b * (n - 1), FLOOR * c) if n else c for n, c in enumerate(self.target)]
        g = best_length(self.rate, costs, self.per_token, max_len)
        if g == 0 and max_len > 0:
            self.idle += 1
            if self.idle % PROBE_EVERY == 0:
                g = 1
        else:
            self.idle = 0
        self._last = (self.clock() if self.clock is not None else 0.0, g, self._last is None)
        return g

    def update(self, drafted: int, accepted: int) -> None:
        """A verified step: `accepted` of `drafted` positions, the rest cut at the first rejection."""
        self.accepted += accepted
        self.rejected += 1 if accepted < drafted else 0
