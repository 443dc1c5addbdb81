"""Draft sizes from measured costs: how many tokens to draft per step so that tokens per second is
highest, given the target's forward cost curve (models/costs.py), what a drafted token costs to
make, and the acceptance rate measured so far in this generation.

Model (after Leviathan et al. 2023, section 3): the drafted token at depth k is accepted with
probability a_k once the tokens before it were, so a draft of g tokens commits
E(g) = 1 + a_1 + a_1 a_2 + ... + a_1...a_g tokens per step (the bonus included; Leviathan et al.
take one a for every depth), and a step costs
T(g) = c(g + 1) + g * d, with c(n) the target's forward of n tokens and d the cost of drafting one
token (a draft model's 1-token forward; ~0 for lookup drafts). The best g maximises E(g) / T(g);
g = 0 (plain decoding) whenever no draft beats c(1).

The rates are estimated online: a pooled rate a, from a Beta(PRIOR_ACCEPT, PRIOR_REJECT) prior
(a = 0.6, worth 5 positions) updated with every verified position (accepted positions count
toward a, the first rejected one against it), and per depth k the share accepted of the drafts
that reached k, with a as its prior (5 positions), plus one standard deviation (optimism: a depth
not drafted yet is worth a try). Acceptance comes in runs, so one rate misleads: sps on
zoo:code-target-l (the grown model of 2026-11) accepts 60% at depth 1 and 86-97% at depths 3-5
(HumanEval), and the pooled rate of its short drafts (about 0.6) never made the long ones look
worth drafting (auto gamma 1.03 / 1.00x llama.cpp's greedy on HumanEval / held-out code,
against 1.36 / 1.04x for gamma 5; per depth: 1.26 / 1.08x; on the from-scratch code-target-l,
auto 1.13 / 0.97x, gamma 3 1.07 / 0.86x, gamma 5 0.96 / 0.73x). One estimate per key when the
drafter knows what kind of draft it holds (prompt lookup: the length of the matched n-gram,
since a 3-gram match is copied right far more often than a 1-gram one). While g = 0 nothing is
verified, so a step drafts one token now and then to keep the estimate current: after
PROBE_EVERY idle steps, the wait doubling after
each probe that does not bring drafting back (up to PROBE_MAX: a probe costs a draft model its
catching up; after an accepted probe of a draft-free drafter, whose probes cost little, the next
one comes after PROBE_OK steps), and PROBE_MAX steps when even always-accepted drafts would not pay at the measured
costs. T(g) is corrected online by the steps' measured time (AutoLength). And when, at the measured
costs, no draft the drafter could make would pay even if always accepted, the generation rests: `rest()`
tells the drafter to skip PROBE_MAX steps outright (the speculative loop takes them as plain steps
without asking it: on a small llama.cpp model the asking costs as much as a tenth of a step), and
then a probe measures the costs again. A drafter whose steps all offer one kind of draft (sps) also
rests between its probes while its measured acceptance makes drafting not pay (`rest(idle=True)`):
nothing is verified in between, so its choice could not change.

Both estimates can be wrong in drafting's favour (acceptance carried from a generation that
accepted everything, optimistic depth rates, a forward whose cost grows faster with its tokens in
a generation than on the curve), so what the drafted steps realized is checked too (Paid): when the
last PAID_STEPS timed drafted steps (probes included) committed fewer tokens per second than
PAID_SHARE of a plain step's rate, the auto takes PROBE_EVERY plain steps, then drafts as the model
says, and rests twice as long each time its drafted steps lose again (up to PROBE_MAX; back to
PROBE_EVERY once they pay). A rest that a generation's end cuts short is finished by the next
generations, by the clock. The share leaves the model the marginal calls: judged against plain
steps' full rate, the check cost pld, aded and token_recycling on torch 6-22% (bursts of accepted
copies came while it rested after a run of rejected ones); at 0.6 they ran level there, and on
llama.cpp on an AMD EPYC host token_recycling went from 0.77-0.86 to 0.85-0.91x greedy and aded
from 0.69-0.90 to 0.78-0.93 (A/B from one source path, 8 prompts, 2 repeats, HumanEval and held-out
code).
"""
from __future__ import annotations

import math
import statistics
import time
from collections import deque

PRIOR_ACCEPT, PRIOR_REJECT = 3.0, 2.0
PROBE_EVERY = 16
PROBE_MAX = 256
RECENT = 9  # step times kept per draft length: their median is its error (one slow step, a cooled cache
# after the prompt's prefill or the machine's other work, moves no median)
FLOOR = 0.25  # corrected step costs stay above this share of the measured curve
RECURVE = 16  # context tokens between re-reads of a context-dependent curve
PROBE_OK = 4  # the wait after an accepted probe of a draft-free drafter (update)
RECOST = 8  # calls between recomputations of the clock-corrected curve
UNTIMED = 4  # a draft model's first steps of a generation, not timed: they run slow after the prompt's
# prefills (sps on zoo:code-target on torch, gamma 2: its 2nd to 4th steps 0.7, 0.3 and 0.25 ms over the later ones)
RESTING = "resting since"  # the key in `seen` of the clock time the current hopeless rest began
PAID = "paid"  # the key in `seen` of what the drafted steps realized (Paid)
PAID_STEPS = 8  # the drafted steps whose realized rate is judged
PAID_SHARE = 0.6  # they rest when they committed fewer tokens per second than this share of plain steps


class Paid:
    """What drafting realized: the last PAID_STEPS timed drafted steps' (tokens committed, seconds),
    a generation's first steps left out, and the plain steps to take when they committed fewer
    tokens per second than PAID_SHARE of a plain step's rate (PROBE_EVERY, doubling up to PROBE_MAX
    while each judgement after a rest finds them losing again, back to PROBE_EVERY once they pay)."""

    def __init__(self):
        self.steps: deque = deque(maxlen=PAID_STEPS)
        self.fresh = 0  # steps added since the last judgement that found them losing
        self.wait = PROBE_EVERY
        self.until = 0.0  # the clock by which the last rest's plain steps would be taken (0: they were)

    def add(self, tokens: int, seconds: float) -> None:
        self.steps.append((tokens, seconds))
        self.fresh += 1

    def rest(self, plain: float) -> int:
        """Plain steps to take now (0: go on drafting), `plain` the seconds of a plain step. Judged on
        a full window, and after a losing judgement not again before a drafted step is added."""
        steps = list(self.steps)  # a snapshot: generations in other threads may add to it
        if len(steps) < PAID_STEPS or not self.fresh:
            return 0
        if sum(t for t, _ in steps) * plain >= PAID_SHARE * sum(x for _, x in steps):
            self.wait = PROBE_EVERY
            return 0
        self.fresh, wait = 0, self.wait
        self.wait = min(2 * wait, PROBE_MAX)
        return wait


def expected_tokens(a, g: int) -> float:
    """E(g): tokens committed per step with g drafted tokens. a: one acceptance rate for every
    position, or per-depth rates a[k - 1] = P(depth k accepted | depths < k accepted)."""
    if isinstance(a, (int, float)):
        return float(g + 1) if a >= 1.0 else (1.0 - a ** (g + 1)) / (1.0 - a)
    total, reach = 1.0, 1.0
    for k in range(g):
        reach *= a[k]
        total += reach
    return total


def best_length(a, target: list[float], per_token: float, max_len: int, depth_of=None) -> int:
    """argmax over g in [0, max_len] of E(g) / (target[g + 1] + g * per_token); target[n] is the
    time of an n-token forward (target[0] unused), so g <= len(target) - 2. a as in
    expected_tokens (per-depth rates: at least that many). depth_of: for a drafter whose g drafted
    tokens form a tree, depth_of[g] is the depth of its g-node tree, which bounds what one step
    can commit: E(g) is then the chain's E at that depth (a 15-node tree of depth 5 commits at
    most 6 tokens, not 16)."""
    best, best_rate = 0, 1.0 / target[1]
    flat = isinstance(a, (int, float))
    reach, reached = 1.0, [1.0]  # reached[k]: E of a chain of k
    for g in range(1, min(max_len, len(target) - 2) + 1):
        k = g if depth_of is None else depth_of[g]
        if flat:
            total = expected_tokens(a, k)
        else:
            while len(reached) <= k:
                reach *= a[len(reached) - 1]
                reached.append(reached[-1] + reach)
            total = reached[k]
        rate = total / (target[g + 1] + g * per_token)
        if rate > best_rate:
            best, best_rate = g, rate
    return best


class AutoLength:
    """Per-generation draft length: `length(max_len)` before a step, `update(drafted, accepted)`
    after it. target: the target's cost curve, or a function of the context length that gives
    it; per_token: the cost of drafting one token, or a function of the context length (read
    again every RECURVE tokens of context that `length` is told of). switch: what a forward
    costs on top when the previous one had another size (models/costs.switch): a step that
    changes the draft length is charged it once, at the step that changes it (charged there and
    back when it left plain steps, it kept token_recycling on zoo:code-target on llama.cpp in
    plain steps where its top4 tree runs 1.25x greedy: auto 0.74-0.97 of top4 on HumanEval over
    eight runs, one resting through every held-out prompt; 0.91-1.00 with the switch charged once),
    and the clock's step times are taken net of it.

    The curve leaves out what the step costs around the forwards (drafting, verifying and
    committing in Python: about 0.1-0.3 ms on a CPU, as much as a whole llama.cpp forward of a
    small model). So `length` also reads the clock: the time from one call to the next is the
    step just taken, and its error against the model at the step's context is kept per draft
    length (the median of the last RECENT); the errors are fitted as a + b g over the drafting lengths
    seen (least squares; b = 0 while one length is seen) and added to T(g); a step without a draft
    (g = 0) gets its own measured error (with a draft model, from plain steps after plain steps
    only: one right after a draft pays for the drafting around it, see `_tick`). The clock
    only steers the choice: nothing measured here is reported. clock=None: the curve alone
    decides. seen: where the errors are kept (models/costs.clock: one dict per kind of draft
    and model, so that a generation starts from what the ones before it measured instead of
    from the curve alone, whose errors had the first steps of every generation draft where
    drafting did not pay), and when their current rest began (a rest that no draft could end,
    counted across them); None: this generation's own. carry: where the pooled acceptance and
    the wait before the next probe of each kind of draft outlive a generation (a dict shared like
    `seen`): a generation starts from the last one's rate, worth the prior's 5 positions, its
    per-depth rates, each worth at most as much, and its wait, instead of drafting its first
    steps on the prior's 0.6 and probing after PROBE_EVERY steps (sps asks for it: a draft model
    that does not pay otherwise prefills the prompt and catches up at three probes in every
    128-token generation; token_recycling too: without the depths, a generation whose first
    drafts were rejected drafted one node at a time for hundreds of steps, never measuring the
    depths below, where its runs of accepted tokens are); None: the prior. depth_of: for a
    drafter whose length is a tree's nodes, each size's tree depth (best_length)."""

    def __init__(self, target, per_token=0.0, clock=time.perf_counter, switch: float = 0.0,
                 seen: dict | None = None, carry: dict | None = None, depth_of=None):
        self._target_at = target if callable(target) else None
        self._per_token_at = per_token if callable(per_token) else None
        self.context = 0  # the context length the curves were read at
        self.target = target(0) if self._target_at else target
        self.per_token = per_token(0) if self._per_token_at else per_token
        self.clock, self.switch, self.depth_of = clock, switch, depth_of
        self.counts: dict = {}  # key -> [accepted, rejected] positions, the prior included
        self.depths: dict = {}  # key -> ([accepted at depth k], [verified at depth k]), k = 1.. (index k - 1)
        self._rates: dict = {}  # key -> depth_rates(key), until the next update
        self.idle: dict = {}  # key -> [steps in a row without drafting, idle steps before the next probe]
        self.carry = carry
        w = PRIOR_ACCEPT + PRIOR_REJECT
        for key, (a, r, wait, acc, tried) in list((carry or {}).items()):  # a snapshot: other threads may write it
            self.counts[key] = [w * a / (a + r), w * r / (a + r)]
            self.idle[key] = [0, wait]
            # each depth's rate as the last generation left it, worth at most the prior's positions
            self.depths[key] = ([x * min(1.0, w / t) for x, t in zip(acc, tried)], [min(t, w) for t in tried])
        # draft length -> the last RECENT steps' seconds beyond the model (the curve and drafting)
        self.seen: dict[int, deque] = {} if seen is None else seen
        self._costs, self._age, self._nseen = None, 0, 0  # _corrected()'s last result, its age, len(seen) then
        self._choices: dict = {}  # (key, previous length, max_len) -> length, while costs and rates hold
        self._hopeless: bool | None = None  # no draft pays at the corrected costs, even always accepted (None: not asked yet)
        self._rested = False  # a rest has ended: the next step that could draft probes
        self._probing = False  # that probe's step is under way
        self._waiting: list | None = None  # the idle count of the last step's kind, when it chose not to draft
        self._probed = False  # this step is an idle probe (its update reads it; `_probing` is a rest's probe)
        self._steps = 0  # `length` calls so far (the first ones' times are not kept)
        self._discounted = 0.0  # seconds of the step under way that are not its own (discount)
        self._committed = 1  # tokens the last verified step committed (update)
        self._owed = 0  # plain steps that the realized rate has called for (Paid), for rest() to take
        self._paid_resting = False  # a rest that Paid called for is under way
        # (clock at the last call, length chosen, first call?, a change of length?)
        self._last: tuple[float, int, bool, bool] | None = None

    def rate_of(self, key=None) -> float:
        """The acceptance rate estimated for drafts of kind `key`."""
        a, r = self.counts.get(key, (PRIOR_ACCEPT, PRIOR_REJECT))
        return a / (a + r)

    def depth_rates(self, key=None) -> list[float]:
        """Per-depth acceptance rates, optimistic: P(depth k accepted | depths < k accepted),
        estimated from the drafts of kind `key` that reached depth k, with the pooled rate
        (`rate_of`) as a prior worth PRIOR_ACCEPT + PRIOR_REJECT positions, plus one standard
        deviation. Drafts are accepted in runs (once the first tokens are right the next ones
        mostly are), which one pooled rate, estimated from the depths drafted so far, misses;
        the deviation makes depths not yet tried worth a try."""
        if key in self._rates:
            return self._rates[key]
        p, w = self.rate_of(key), PRIOR_ACCEPT + PRIOR_REJECT
        acc, tried = self.depths.get(key, ((), ()))
        out = []
        for k in range(len(self.target) - 2):
            a, n = (acc[k], tried[k]) if k < len(acc) else (0, 0)
            m = (a + w * p) / (n + w)
            out.append(min(1.0, m + math.sqrt(m * (1.0 - m) / (n + w + 1.0))))
        self._rates[key] = out
        return out

    @property
    def rate(self) -> float:
        return self.rate_of(None)

    def model(self, g: int) -> float:
        """Predicted seconds of a step drafting g tokens, before correction."""
        return self.target[g + 1] + g * self.per_token

    def correction(self, drafting: bool = True) -> tuple[float, float]:
        """(a, b): the least-squares line through the seen lengths' errors (observed - model), over
        the drafting lengths (g >= 1; none seen yet: g = 0's error) or over g = 0 alone (a step
        without a draft skips drafting and verifying, so its error is its own; none seen yet: 0,
        the bare curve, which makes an unmeasured plain step look at least as cheap as it is)."""
        # a snapshot: `seen` may be shared with generations running in other threads (the server's)
        seen = [(g, e) for g, e in list(self.seen.items()) if isinstance(g, int) and g + 1 < len(self.target)]
        # a length timed once (a tree tried in a generation's first steps, with a cold matrix) would
        # fix the fitted per-token cost for good: drafting may look hopeless, and a rest times nothing
        # (aded on zoo:code-target on llama.cpp rested through every generation of a process that
        # way). So the lengths timed twice or more, where there are any
        seen = [(g, e) for g, e in seen if len(e) > 1] or seen
        every = [(g, statistics.median(e)) for g, e in seen]
        pts = [(g, e) for g, e in every if (g > 0) == drafting] or (every if drafting else [])
        if not pts:
            return 0.0, 0.0
        mg = sum(g for g, _ in pts) / len(pts)
        me = sum(e for _, e in pts) / len(pts)
        var = sum((g - mg) ** 2 for g, _ in pts)
        b = sum((g - mg) * (e - me) for g, e in pts) / var if var else 0.0
        return me - b * mg, max(b, 0.0)

    def _corrected(self) -> list[float]:
        """The curve corrected by the clock, never below a quarter of the measured curve (a step
        faster than its forward is noise, or a quieter machine than at measuring time); computed
        again every RECOST calls (step times move slowly), when a length is first seen or the
        curve is read again (its Python costs as much as a small model's llama.cpp step)."""
        self._age += 1
        if self._costs is None or self._age >= RECOST or len(self.seen) != self._nseen:
            (a0, _), (a, b) = self.correction(False), self.correction(True)
            self._costs = [c if n == 0 else max(c + (a0 if n == 1 else a + b * (n - 1)), FLOOR * c)
                           for n, c in enumerate(self.target)]
            self._age, self._nseen = 0, len(self.seen)
            self._choices.clear()
            self._hopeless = None  # rest() asks again
        return self._costs

    def rest(self, longest: int | None = None, idle: bool = False) -> int:
        """How many steps to take without drafting and without calling `length` (nor `update`): PROBE_MAX
        when, at the costs corrected so far, no draft of up to `longest` tokens (default: any the
        curve covers) would pay even if always accepted (a plain step that skips the drafter's
        bookkeeping costs less than one that asks); else 0. After a rest the next step that
        could draft probes, and no rest comes before its time is kept (the clock starts again at
        the probe: the rest's steps are not timed). Generations that share `seen` share the rest:
        once PROBE_MAX plain steps' time has passed since it began, the next generation probes at
        its second step (its first is never timed) instead of resting again, so a process whose
        measured costs once made every draft hopeless still probes every PROBE_MAX to
        2 PROBE_MAX steps, and that probe starts the drafted steps' times afresh. A draft model
        (per_token > 0) probes at a generation's first step instead, where it prefills the prompt
        anyway (at the second it would catch up on the whole context), and the generation drafts
        from there as the costs and acceptance say.
        idle: also rest when the last step chose not to draft at the acceptance measured so far,
        up to the step before its next probe (which then comes as it would have). For a drafter
        whose every step offers one kind of draft (sps): its choice cannot change before that
        probe, as nothing is verified in between, so asking at every step only costs Python (on a
        small llama.cpp model, a tenth of a step). Not for one whose steps differ (pld: the next
        step's match may be a longer one, worth drafting)."""
        if self._costs is None:  # before the first step: the curve alone (and any step times kept in `seen`)
            self._corrected()
        if not self._steps and self.clock is not None and getattr(self.seen.get(PAID), "until", 0.0):
            # a rest that a generation before this one began and did not finish: what is left of it
            # by the clock (as a hopeless rest's end, RESTING; another generation's steps may have
            # passed in between)
            self._owed = max(math.ceil((self.seen[PAID].until - self.clock()) / self._costs[1]), 0)
        if self._owed:  # the drafted steps lost to plain ones, as timed (Paid): the step just taken is timed
            steps, self._owed, self._paid_resting, plain = self._owed, 0, True, self._costs[1]
            self._begin_rest()
            self.seen[PAID].until = self.clock() + steps * plain
            return steps
        if self._rested or self._probing:
            return 0
        if self._hopeless is None:  # once per recomputation of the costs
            longest = len(self._costs) if longest is None else longest
            self._hopeless = not best_length(1.0, self._switched(self._costs, 0), self.per_token, longest,
                                             self.depth_of)
            if not self._hopeless:  # a rest kept in `seen` is over (setting or removing it recomputes)
                self.seen.pop(RESTING, None)
        if not self._hopeless:
            wait = self._waiting if idle else None
            steps = wait[1] - wait[0] - 1 if wait is not None else 0
            if steps <= 0:
                return 0
            wait[0] += steps  # the rest's steps count as idle ones: the probe comes on time
            # the step that chose not to draft is timed (the plain step's error weighs every choice to
            # draft against it)
            self._begin_rest()
            return steps
        if self.clock is not None:
            # a rest cut short by the end of a generation would otherwise start again at the next
            # one, whose costs are the same (a rest times nothing): a process that once measured
            # drafting as hopeless (a busy minute) would never draft again
            now = self.clock()
            since = self.seen.setdefault(RESTING, now)
            if now - since >= PROBE_MAX * self._costs[1]:  # PROBE_MAX steps' time has passed: probe
                if not self._steps:
                    if self.per_token:
                        # a draft model probes at a generation's start, where it prefills the prompt
                        # anyway (mid-generation its probe would catch up on the whole context, which
                        # costs and mis-times it): the drafted steps' times are forgotten and the
                        # generation drafts as the curve and its plain steps' error say, timing them
                        # again after its first UNTIMED steps. Without it, a process whose drafted
                        # steps were once timed as hopeless (a busy minute) rested through every later
                        # generation of fewer than PROBE_MAX tokens: a rest times nothing
                        self._forget()
                    return 0  # a draft-free drafter's first step is never timed: it probes at its second
                if not self.per_token:
                    self._rested = True  # the next step probes
                    return 0
        self._last, self._rested = (None, 0, False, False), True  # untimed, after plain steps
        return PROBE_MAX

    def _begin_rest(self) -> None:
        """The step just taken is timed (its forward is done); the rest's plain steps are not."""
        self._tick()
        self._last, self._waiting = (None, 0, False, False), None

    def length(self, max_len: int, key=None, context: int | None = None) -> int:
        """The draft length for the next step (at most max_len; 0: no draft), for a draft of kind
        `key`, `context` tokens into the sequence. Call it once per step, max_len 0 included: the
        time between calls is the step's."""
        prev = self._last[1] if self._last is not None else None
        self._probed = False
        self._tick()
        if self._paid_resting:  # this generation took the whole rest
            self._paid_resting, self.seen[PAID].until = False, 0.0
        self._steps += 1
        # untimed: a generation's first step (it prefills the draft model, or forms a lookup's first
        # match), and with a draft model its first UNTIMED: they run slow after the prompt's prefills
        first, self._probing = self._steps <= (UNTIMED if self.per_token else 1), False
        if context is not None and abs(context - self.context) >= RECURVE:
            self.context = context
            if self._target_at:
                self.target, self._costs = self._target_at(context), None
            if self._per_token_at:
                self.per_token, self._costs = self._per_token_at(context), None
        if max_len <= 0:  # nothing to choose (no draft to make): only the clock is kept
            now = self.clock() if self.clock is not None else 0.0
            self._last, self._waiting = (now, 0, first, prev not in (None, 0)), None
            return 0
        costs = self._corrected()
        # the choice changes only with the costs, the rates or the previous length: most steps
        # (idle ones above all, whose rates stay put) find it here
        choice = (key, prev, min(max_len, len(costs) - 2))
        g = self._choices.get(choice)
        if g is None:
            g = self._choices[choice] = best_length(self.depth_rates(key), self._switched(costs, prev),
                                                    self.per_token, max_len, self.depth_of)
        idle = self.idle.setdefault(key, [0, PROBE_EVERY])
        if g == 0 and max_len > 0:
            idle[0] += 1
            # a probe; the next one waits twice as long. When even drafts that are always accepted
            # would not pay at the measured costs, no acceptance rate can change the choice: the
            # probes only re-measure the costs, PROBE_MAX steps apart (checked once per wait: the
            # check costs as much as the choice), or after a rest
            if self._rested:
                g, idle[0], self._rested, self._probing = 1, 0, False, True
                self.seen.pop(RESTING, None)  # the rest is over: the next one counts from its own start
            elif idle[0] >= idle[1]:
                if idle[0] >= PROBE_MAX or best_length(1.0, self._switched(costs, prev), self.per_token, max_len,
                                                       self.depth_of):
                    g, idle[0], idle[1] = 1, 0, min(2 * idle[1], PROBE_MAX)
                    self._probed = True
                else:
                    idle[1] = PROBE_MAX
        elif g:
            idle[0], idle[1], self._rested = 0, PROBE_EVERY, False
        if g and self.clock is not None:
            # the model chose to draft (or probe): has drafting paid, as timed? (the curve and the acceptance
            # estimates can both be wrong in its favour: token_recycling on zoo:code-target on
            # llama.cpp on an AMD EPYC host drafted 6-node trees that a step's Python and a forward
            # whose cost grows 6x from 1 to 7 tokens made lose, at 0.76x greedy)
            paid = self.seen.get(PAID)  # kept once a drafted step was timed
            self._owed = paid.rest(costs[1]) if paid is not None else 0
            if self._owed:  # a plain step, then the rest: a probe it replaces is not one
                g, self._probed, self._probing = 0, False, False
        self._waiting = idle if g == 0 and max_len > 0 and not self._owed else None
        self._last = (self.clock() if self.clock is not None else 0.0, g, first, prev is not None and g != prev)
        return g

    def pause(self) -> None:
        """The next step is another drafter's (a drafter that hands some steps to a second one:
        samd): the step just taken is timed as at a `length` call, the next one is not, and the
        first length chosen after it is charged a switch (the other drafter's forward had another
        size) but never twice. Acceptance estimates are untouched."""
        self._tick()
        self._last = (None, -1, False, False)

    def discount(self, seconds: float) -> None:
        """Time the step under way spent on what no draft length chose (a draft model catching up on
        the tokens of plain steps: after a rest of R steps, its forward of R tokens): the step is
        timed without it. The probes that end an idle rest of sps on zoo:code-target on torch
        (after 14 to 126 plain steps) ran 1.3-2.3 ms over the curve, against 0.8-0.9 ms for its
        1-token drafted steps in a run; net of the catch-up, 0.9 ms."""
        self._discounted += max(seconds, 0.0)

    def _tick(self) -> None:
        """Keep the time since the last call as the error of the step it began, when it was timed."""
        discounted, self._discounted = self._discounted, 0.0
        if self._last is None or self._last[0] is None or self.clock is None:
            return
        t0, g0, was_first, switched = self._last
        if g0 == 0 and switched and self.per_token:
            # a plain step right after a draft model's step (or another drafter's: samd's copies) pays
            # for the drafting around it (the draft's forwards cooled the target's caches, beyond the
            # graph rebuilt) where a plain step in a run, as a rest takes them, does not. Timed, it
            # made plain steps look dearer than resting costs, and once drafting, nothing timed them
            # otherwise: sps on zoo:code-target on llama.cpp (plain steps timed 0.5 ms over a 0.63 ms
            # curve) drafted on at 0.74-0.78x greedy in 1 of 5 processes, where resting runs at 0.97x
            return
        # the step's error against the curve at the context it ran at (errors carry over from one
        # context, and one generation, to the next better than times do)
        took = self.clock() - t0 - discounted
        err = took - (self.switch if switched else 0.0) - self.model(g0)
        if g0 > 0 and not was_first:  # what drafting realized, switch and all
            paid = self.seen.get(PAID)
            if paid is None:
                paid = self.seen[PAID] = Paid()
            paid.add(self._committed, took)
        if not was_first and g0 + 1 < len(self.target):  # the first step also pays the draft's catching up on the prompt
            if self._probing and not self.per_token:
                # a rest's probe: the drafted steps' times that made every draft hopeless are at
                # least PROBE_MAX steps old, and the probe times one length only, which their median
                # and fit would outvote for good; it starts them afresh
                self._forget()
            self.seen.setdefault(g0, deque(maxlen=RECENT)).append(err)

    def _forget(self) -> None:
        """Drop the drafted steps' times and the current rest (costs are worked out again)."""
        for g in [k for k in list(self.seen) if isinstance(k, int) and k > 0]:
            self.seen.pop(g, None)
        self.seen.pop(RESTING, None)
        self._costs = None

    def _switched(self, costs: list[float], prev: int | None) -> list[float]:
        """costs with the switch charged to every length but the previous one: once, at the step
        that switches (the way back is charged when it comes)."""
        if not self.switch or prev is None:
            return costs
        return [c + (0.0 if n - 1 == prev else self.switch) if n else c for n, c in enumerate(costs)]

    def update(self, drafted: int, accepted: int, key=None) -> None:
        """A verified step: `accepted` of `drafted` positions, the rest cut at the first rejection."""
        self._committed = accepted + 1
        if drafted <= 0:
            return
        c = self.counts.setdefault(key, [PRIOR_ACCEPT, PRIOR_REJECT])
        c[0] += accepted
        c[1] += 1 if accepted < drafted else 0
        if self._probed and accepted == drafted and not self.per_token:
            # an accepted probe of a draft that costs nothing to make: the next one comes after PROBE_OK
            # steps, not twice the last wait (token_recycling on zoo:code-target on llama.cpp, from
            # the bench's cold matrix: each generation opens with rejected trees, and a probe
            # accepted 16 plain steps later did not bring them back for another 32: 0.73-0.95 of
            # top4 over 9 paired runs, mean 0.84, against 0.90-0.97 over 5, mean 0.94, with this)
            self.idle.setdefault(key, [0, PROBE_EVERY])[1] = PROBE_OK
        acc, tried = self.depths.setdefault(key, ([], []))
        for k in range(min(accepted + 1, drafted)):  # the depths verified: the accepted, then the first rejected
            if k == len(tried):
                acc.append(0)
                tried.append(0)
            tried[k] += 1
            acc[k] += k < accepted
        if self.carry is not None:
            self.carry[key] = (c[0], c[1], self.idle.get(key, (0, PROBE_EVERY))[1], list(acc), list(tried))
        self._rates.pop(key, None)
        self._choices.clear()
