"""Draft sizes from cost curves (core/costs.py) and the measured curves (models/costs.py)."""
import json

import pytest
import torch

import decodelab
from decodelab.core.costs import (PROBE_EVERY, PROBE_MAX, PROBE_OK, RECENT, RESTING, UNTIMED, AutoLength, best_length,
                                  expected_tokens)
from decodelab.models import costs
from decodelab.models.toy import ToyLM

FLAT = [0.0] + [1.0 + 0.01 * n for n in range(1, 17)]  # memory-bound: a longer step costs little more
LINEAR = [0.0] + [float(n) for n in range(1, 17)]  # compute-bound: n tokens cost n times one


def test_expected_tokens():
    assert expected_tokens(0.0, 5) == 1.0 and expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


def test_best_length_follows_cost_and_acceptance():
    assert best_length(0.9, FLAT, 0.0, 15) == 15  # drafting is nearly free: draft all allowed
    assert best_length(0.9, FLAT, 0.0, 3) == 3  # ... up to the room left
    assert best_length(0.99, LINEAR, 0.0, 15) == 0  # a step of n costs n: nothing can pay
    assert best_length(0.1, FLAT, 0.0, 15) == 1  # low acceptance: one guess (cost 1%) still pays
    assert best_length(0.1, FLAT, 0.5, 15) == 0  # ... not when a drafted token costs half a step
    mid = [0.0] + [1.0 + 0.25 * (n - 1) for n in range(1, 17)]
    assert 1 <= best_length(0.7, mid, 0.0, 15) < best_length(0.9, mid, 0.0, 15)


def test_best_length_values_a_tree_at_its_depth():
    """depth_of: a tree of g nodes commits at most its depth + 1 tokens, so on a flat curve the
    deepest small tree wins over a wider one of the same depth; without it g nodes count as a chain."""
    flat = [0.0] + [1.0 + 0.01 * n for n in range(1, 17)]
    depth_of = [0, 1, 2, 3, 4, 5, 6] + [6] * 9
    assert best_length(1.0, flat, 0.0, 15) == 15
    assert best_length(1.0, flat, 0.0, 15, depth_of) == 6
    assert best_length([0.9] * 15, flat, 0.0, 15, depth_of) == 6
    assert AutoLength(flat, clock=None, depth_of=depth_of).length(15) == 6


def test_auto_length_learns_acceptance_and_probes():
    auto = AutoLength(FLAT, per_token=0.2, clock=None)  # the curve alone decides
    start = auto.length(10)
    for _ in range(30):  # every draft rejected at once
        auto.update(start or 1, 0)
    assert auto.rate < 0.1 and auto.length(10) == 0
    picks = [auto.length(10) for _ in range(PROBE_EVERY * 8)]  # idle: a 1-token probe now and then,
    probes = [i for i, g in enumerate(picks) if g]  # each unanswered one doubling the wait for the next
    assert set(picks) == {0, 1} and len(probes) == 3
    assert probes[2] - probes[1] == 2 * (probes[1] - probes[0]) == 4 * PROBE_EVERY
    for _ in range(200):  # then everything accepted: back to long drafts
        auto.update(5, 5)
    assert auto.rate > 0.95 and auto.length(10) >= 5


STEP = [0.0, 1.0] + [1.8 + 0.22 * (n - 2) for n in range(2, 17)]  # llama.cpp's 1 -> 2 token jump (code-target-l)


def test_expected_tokens_per_depth():
    assert expected_tokens([0.5] * 4, 3) == pytest.approx(expected_tokens(0.5, 3))
    assert expected_tokens([0.5, 1.0, 1.0], 3) == pytest.approx(2.5)  # a run: right after the first, all right
    assert best_length([0.5, 1.0, 1.0, 1.0], STEP, 0.0, 4) == 4 and best_length(0.5, STEP, 0.0, 4) == 0


def test_acceptance_is_estimated_per_depth():
    """Drafts right in runs: 40% rejected at once, the rest accepted whole. Depth 1's rate is
    low, the deeper ones high, and the length follows the deeper ones."""
    auto = AutoLength(STEP, clock=None)
    for i in range(40):
        auto.update(5, 0 if i % 5 < 2 else 5)
    r = auto.depth_rates()
    assert r[0] < 0.75 and min(r[1:5]) > 0.9
    assert auto.length(8) >= 5


def test_untried_depths_are_worth_a_try_and_failing_ones_are_dropped():
    auto = AutoLength(STEP, clock=None)
    for i in range(10):  # only depth 1 verified, 60% right: at one rate of 0.6 no length pays on STEP
        auto.update(1, int(i % 5 < 3))
    assert best_length(auto.rate, STEP, 0.0, 8) == 0
    assert auto.length(8) >= 2  # the depths never tried are worth trying
    for _ in range(40):  # depth 2 always wrong
        auto.update(5, 1)
    assert auto.length(8) == 1


def test_auto_length_hardly_probes_when_no_acceptance_could_pay():
    """A compute-bound target and a costly draft: even always-accepted drafts lose, so the
    acceptance rate cannot change the choice and probes come only PROBE_MAX steps apart."""
    auto = AutoLength(LINEAR, per_token=0.5, clock=None)
    picks = [auto.length(10) for _ in range(2 * PROBE_MAX)]
    assert [i for i, g in enumerate(picks) if g] == [PROBE_MAX - 1, 2 * PROBE_MAX - 1]


def test_auto_length_keeps_an_acceptance_rate_per_kind_of_draft():
    """Prompt lookup's key is the matched n-gram's length: bad 1-gram guesses do not stop the
    3-gram matches from drafting."""
    auto = AutoLength([0.0] + [1.0 + 0.3 * (n - 1) for n in range(1, 17)], clock=None)
    for _ in range(40):
        auto.update(2, 0, key=1)
        auto.update(4, 4, key=3)
    assert auto.rate_of(1) < 0.1 < 0.9 < auto.rate_of(3) and auto.rate == 0.6  # the unkeyed prior untouched
    assert auto.length(8, key=1) == 0 and auto.length(8, key=3) >= 4


def test_measured_curve_is_cached_on_the_adapter_and_on_disk(tmp_path, monkeypatch, tiny_dirs):
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path))
    lm = decodelab.load(tiny_dirs["llama"][0])
    c = costs.curve(lm, n_max=6)
    assert len(c) == 7 and c[0] == 0.0 and all(x > 0 for x in c[1:])
    files = list((tmp_path / "costs").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["seconds"] == c
    assert costs.curve(lm.fresh(), n_max=6) == c  # the fresh copy shares the memo
    monkeypatch.setattr(costs, "measure", lambda *a: pytest.fail("measured again"))
    monkeypatch.setattr(costs, "_quieter", lambda *a: False)  # the machine no quieter than at measuring time
    assert costs.curve(decodelab.load(tiny_dirs["llama"][0]), n_max=6) == c  # another load: from disk
    toy = ToyLM.random(8)
    monkeypatch.undo()
    assert len(costs.curve(toy, n_max=4)) == 5 and costs.curve(toy.fresh(), n_max=4) == toy.costs[None]["seconds"][:5]


@pytest.mark.parametrize("method,kw", [("sps", {}), ("pld", {}), ("sps", {"gamma": "auto"})])
def test_auto_draft_sizes_are_lossless_and_draft_when_it_pays(method, kw, toy_pair, monkeypatch):
    """With a memory-bound curve planted, auto drafts long chains and stays exactly greedy; with a
    compute-bound one it stops drafting (probes aside)."""
    target, draft = toy_pair
    prompt = [1, 2, 1, 2, 1, 2, 1]
    ref = decodelab.generate(target, prompt, max_new_tokens=40, ignore_eos=True).tokens
    for curve, drafts in ((FLAT, True), (LINEAR, False)):
        cheap = [x * 0.05 for x in curve]  # the draft: a twentieth of the target's cost
        monkeypatch.setattr(costs, "curve", lambda lm, n_max=16, context=0, c=curve, d=cheap:
                            d if lm.table is draft.table else c)
        out = decodelab.generate(target, prompt, method, draft=draft if method == "sps" else None,
                                 max_new_tokens=40, ignore_eos=True, **kw)
        assert out.tokens == ref
        steps = len(out.stats.committed)
        assert (out.stats.target_tokens_scored > 2 * steps) if drafts else (out.stats.target_tokens_scored < 1.3 * steps)


def test_auto_is_the_default_and_a_word_on_the_command_line():
    from decodelab.methods.pld import PLDConfig
    from decodelab.methods.sps import SpSConfig

    assert SpSConfig().gamma is None and SpSConfig(gamma="auto").gamma is None and SpSConfig(gamma=4).gamma == 4
    assert PLDConfig(num_tokens="auto").num_tokens is None
    with pytest.raises(decodelab.DecodeLabError, match=r"gamma must be an integer in \[1, 128\] or 'auto'"):
        SpSConfig(gamma="many")


def test_measured_step_times_correct_the_curve():
    """Steps that take longer than the curve says, more so with more drafted tokens (the Python
    around a drafted token), turn drafting off; steps as the curve says leave it on."""
    mid = [0.0] + [1.0 + 0.1 * (n - 1) for n in range(1, 17)]
    now = [0.0]

    def run(extra_per_token: float) -> list[int]:
        auto, picks = AutoLength(mid, clock=lambda: now[0]), []
        for _ in range(60):
            g = auto.length(8)
            picks.append(g)
            auto.update(g, int(0.8 * g))
            now[0] += mid[g + 1] + extra_per_token * g  # the step's real time
        return picks

    assert run(0.0)[-1] >= 3  # the curve was right: long drafts
    late = run(1.5)[-20:]  # each drafted token costs 1.5 steps more than measured
    assert late.count(0) >= 15


def test_auto_sampling_is_exact(toy_pair, monkeypatch):
    """With auto drafting on (a planted memory-bound curve, a cheap draft), sps's samples still
    follow the target's distribution exactly (every draft length is verified exactly)."""
    from methods.spec_helpers import check_converges

    target, draft = toy_pair
    monkeypatch.setattr(costs, "curve", lambda lm, n_max=16, context=0: [x * (0.05 if lm.table is draft.table else 1.0)
                                                             for x in FLAT])
    check_converges("sps", target, draft, sizes=(150, 1200), temperature=0.8, top_k=5)


def test_curve_follows_the_context_length(monkeypatch):
    """The curve at a context length interpolates linearly between the curves measured after
    CONTEXT and after the far context, extrapolates past it, and a far point that came out
    cheaper (noise) never lowers the short curve."""
    toy = ToyLM.random(8)
    far = costs.CONTEXT + 512
    planted = {"seconds": [0.0, 1.0, 2.0, 3.0], "far": {"context": far, "seconds": [0.0, 3.0, 6.0, 2.0]}}
    monkeypatch.setattr(costs, "measure", lambda lm, n_max: planted)
    assert costs.curve(toy, n_max=3) == [0.0, 1.0, 2.0, 3.0]  # at CONTEXT
    assert costs.curve(toy, n_max=3, context=10) == [0.0, 1.0, 2.0, 3.0]  # shorter: the short curve
    assert costs.curve(toy, n_max=3, context=costs.CONTEXT + 256) == [0.0, 2.0, 4.0, 3.0]
    assert costs.curve(toy, n_max=2, context=far + 512) == [0.0, 5.0, 10.0]
    toy.kv_pad = 256  # llama.cpp: the attention reads the cache in blocks of 256 cells
    assert costs.curve(toy, n_max=3, context=150) == [0.0, 1.0, 2.0, 3.0]  # 151-153 cells: the first block
    assert costs.curve(toy, n_max=2, context=300) == [0.0, 2.0, 4.0]  # the second of the far context's three
    # 255 cached tokens: one new token fills the first block, two reach into the second
    assert costs.curve(toy, n_max=3, context=255) == [0.0, 1.0, 4.0, 3.0]  # (at 3 the far point is cheaper: noise)


def test_both_contexts_are_measured_and_cached(tmp_path, monkeypatch, tiny_dirs):
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path))
    lm = decodelab.load(tiny_dirs["llama"][0])  # a 512-token context: the far curve is measured after 506
    c = costs.curve(lm, n_max=6)
    saved = json.loads(next((tmp_path / "costs").glob("*.json")).read_text())
    assert saved["seconds"] == c and saved["far"]["context"] == 506 and len(saved["far"]["seconds"]) == 7
    assert costs.curve(lm, n_max=6, context=10_000)[1] >= c[1]
    short = ToyLM.random(8)
    short.max_length = costs.CONTEXT + 40  # no room for a second context: one curve, used at every length
    assert "far" not in costs.measure(short, 4)
    assert costs.curve(short, n_max=4, context=100) == costs.curve(short, n_max=4)


def test_auto_length_rereads_the_curve_as_the_context_grows():
    """A curve that turns compute-bound at long contexts (attention's cost grows with the context)
    stops the drafting there; the curve is read again only every RECURVE tokens."""
    from decodelab.core.costs import RECURVE

    reads = []

    def at(n):
        reads.append(n)
        return FLAT if n < 500 else LINEAR

    auto = AutoLength(at, clock=None)
    for _ in range(5):
        auto.update(4, 4)
    assert auto.length(8, context=100) >= 4
    assert auto.length(8, context=100 + RECURVE - 1) >= 4 and reads == [0, 100]
    assert auto.length(8, context=600) == 0 and reads == [0, 100, 600]


def test_a_change_of_draft_length_is_charged_the_switch_cost():
    """A step that changes the draft length pays the shape switch, once: leaving plain steps for
    a draft that gains a little is not worth it then, and is once drafting is under way (the same
    length costs no switch; the way back is charged when it comes)."""
    curve = [0.0] + [1.0 + 0.5 * (n - 1) for n in range(1, 17)]  # 3 tokens cost 2 steps
    for switch, drafts in ((0.0, True), (0.6, True), (1.2, False)):  # 3 tokens for 2 + switch
        auto = AutoLength(curve, clock=None, switch=switch)
        for _ in range(20):
            auto.update(2, 2)  # two drafted tokens always accepted: 3 tokens for 2 steps' cost
        assert auto.length(0) == 0  # a step with nothing to draft
        assert (auto.length(2) == 2) is drafts
    auto = AutoLength(curve, clock=None, switch=1.2)
    for _ in range(20):
        auto.update(2, 2)
    assert auto.length(2) == 2 and auto.length(2) == 2  # the first step has no previous shape; then no switch


def test_a_generation_starts_from_the_last_ones_depth_rates():
    """Drafts accepted in runs (40% rejected at once, the rest whole, as token_recycling's): with
    a carry, the next generation keeps the depths' rates, so a few rejected first drafts (which
    measure depth 1 only) do not make it draft one token at a time (carrying the pooled rate
    alone, it did); without a carry it does."""
    def next_generation(carry):
        first = AutoLength(STEP, clock=None, carry=carry)
        for i in range(40):
            first.update(5, 0 if i % 5 < 2 else 5)
        auto = AutoLength(STEP, clock=None, carry=carry)
        for _ in range(3):
            auto.update(1, 0)
        return auto

    carried = next_generation({})
    assert carried.depth_rates()[1] > 0.85 and carried.length(8) >= 4
    alone = next_generation(None)
    assert alone.length(8) <= 1


def test_a_curve_measured_on_another_host_is_not_read(tmp_path, monkeypatch, tiny_dirs):
    """The host CPU is part of the cache key: a cache directory carried to another machine measures
    there afresh instead of reading (or merging into) the first machine's curve."""
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path))
    assert costs.host() and costs.host() == costs.host()
    costs.curve(decodelab.load(tiny_dirs["llama"][0]), n_max=4)
    monkeypatch.setattr(costs, "host", lambda: "another CPU|flags|L3U=32768K|cpus=2")
    measured = []
    monkeypatch.setattr(costs, "measure", lambda lm, n: measured.append(n) or {"seconds": [0.0] + [1.0] * n})
    assert costs.curve(decodelab.load(tiny_dirs["llama"][0]), n_max=4) == [0.0] + [1.0] * 4
    assert measured == [4] and len(list((tmp_path / "costs").glob("*.json"))) == 2


def test_a_curve_cached_on_a_busy_machine_is_measured_again(tmp_path, monkeypatch, tiny_dirs):
    """A process that reads a cached curve whose 1-token forward is far slower than it now runs
    measures again and keeps the faster value at every point; one that is not slower is kept."""
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path))
    c = costs.curve(decodelab.load(tiny_dirs["llama"][0]), n_max=6)
    path = next((tmp_path / "costs").glob("*.json"))
    saved = json.loads(path.read_text())
    slow = dict(saved, seconds=[0.0] + [x + 10.0 for x in c[1:]])  # as if measured while the machine was busy
    path.write_text(json.dumps(slow))
    again = costs.curve(decodelab.load(tiny_dirs["llama"][0]), n_max=6)
    assert all(x < 10.0 for x in again[1:]) and json.loads(path.read_text())["seconds"] == again
    fast = dict(saved, seconds=[0.0] + [1e-9] * 6)  # faster than any forward: nothing to heal
    path.write_text(json.dumps(fast))
    monkeypatch.setattr(costs, "measure", lambda *a: pytest.fail("measured again"))
    assert costs.curve(decodelab.load(tiny_dirs["llama"][0]), n_max=6) == fast["seconds"]


def test_a_length_timed_once_does_not_set_the_fitted_cost():
    """One slow step at a length tried once (a cold first tree) does not set the per-token slope
    while other lengths were timed twice or more, so it cannot make drafting look hopeless for
    good (a rest times nothing); alone, it still counts."""
    from collections import deque

    seen = {0: deque([0.0, 0.0]), 1: deque([0.1, 0.1]), 4: deque([5.0])}
    auto = AutoLength(FLAT, clock=None, seen=seen)
    assert auto.correction(True) == pytest.approx((0.1, 0.0))
    assert auto.rest() == 0
    assert AutoLength(FLAT, clock=None, seen={4: deque([5.0])}).correction(True) == pytest.approx((5.0, 0.0))


def test_a_generation_rests_when_no_draft_could_pay_then_probes():
    """rest(): PROBE_MAX plain steps when even always-accepted drafts lose at the measured costs
    (before the first step too), none when some length could pay; after a rest the next step
    probes, its time is kept (as its error against the model; the rest's steps are not timed),
    and the next rest comes within RECOST steps."""
    from decodelab.core.costs import RECOST

    assert AutoLength(FLAT, clock=None).rest() == 0
    knee = [0.0, 1.0, 2.0, 3.0] + [3.0 + 0.1 * (n - 3) for n in range(4, 17)]  # only long drafts could pay
    assert AutoLength(knee, clock=None).rest() == 0 and AutoLength(knee, clock=None).rest(longest=2) == PROBE_MAX
    now = [0.0]
    auto = AutoLength(LINEAR, per_token=0.5, clock=lambda: now[0])
    for _ in range(UNTIMED):  # a draft model's first steps (never timed: they catch up on the prompt)
        assert auto.length(10) == 0
        now[0] += 1.0
    assert auto.rest() == PROBE_MAX
    now[0] += 1000.0  # the rested steps
    assert auto.length(10) == 1 and auto.seen == {}  # the probe
    now[0] += 3.0  # its step: 0.5 over the model (a 2-token forward, 2, and a drafted token, 0.5)
    auto.update(1, 1)
    steps = 0
    while not auto.rest():
        assert auto.length(10) == 0
        now[0] += 1.0
        steps += 1
    assert list(auto.seen[1]) == [0.5] and steps <= RECOST


def test_a_hopeless_rest_is_counted_across_generations():
    """Generations of a draft-free drafter that share step times (a process: models/costs.clock)
    and measured drafting as hopeless once (a busy minute) probe again PROBE_MAX steps' time
    later, at a generation's second step, not its first (never timed): a rest that outlasts a
    generation does not start again with the next one. The probe starts the drafted steps' times
    afresh (one quiet probe would not outvote nine busy steps at every length), so drafting comes
    back as soon as the machine is quiet. A draft model probes at a generation's first step (where
    it prefills the prompt anyway), with its drafted steps' times forgotten."""
    from collections import deque

    now = [0.0]
    # drafted steps measured 50 s over the curve, kept as the AutoLength keeps them (the last RECENT)
    seen = {g: deque([50.0] * RECENT, maxlen=RECENT) for g in (1, 2)}

    def generation(steps=100) -> list[int]:
        auto, picks = AutoLength(FLAT, clock=lambda: now[0], seen=seen), []
        resting = auto.rest()
        while len(picks) < steps:
            if resting:
                resting -= 1
                picks.append(-1)  # a rested step: the drafter is not asked
                now[0] += FLAT[1]
                continue
            g = auto.length(10)
            picks.append(g)
            now[0] += FLAT[g + 1]  # the machine is quiet again: steps cost what the curve says
            if g:
                auto.update(g, g)
            resting = auto.rest()
        return picks

    runs = [generation() for _ in range(6)]
    drafted = [(i, j) for i, picks in enumerate(runs) for j, g in enumerate(picks) if g > 0]
    assert runs[0] == [-1] * 100  # the first generation rests throughout, as before
    assert drafted, "the process never drafts again"
    i, j = drafted[0]
    assert i > 0 and j == 1  # a later one probes, at its second step
    assert i * 100 >= PROBE_MAX  # not before PROBE_MAX steps' time (generation i starts after 100 i steps)
    assert sum(g > 0 for g in runs[i]) > 20 and sum(g > 0 for g in runs[-1]) > 20  # and drafts again
    assert all(max(e) < 1.0 for g, e in seen.items() if isinstance(g, int))  # the busy times are gone
    # a draft model's rest outlives its generation too, until PROBE_MAX steps' time is up; then the
    # next generation drafts from its first step (mid-generation the probe would catch up on the
    # whole context), timing its drafted steps afresh
    busy = {1: deque([50.0] * RECENT, maxlen=RECENT)}
    assert AutoLength(FLAT, per_token=0.01, clock=lambda: now[0], seen=busy).rest() == PROBE_MAX
    now[0] += 10 * FLAT[1]
    assert AutoLength(FLAT, per_token=0.01, clock=lambda: now[0], seen=busy).rest() == PROBE_MAX
    now[0] += PROBE_MAX * FLAT[1]
    auto = AutoLength(FLAT, per_token=0.01, clock=lambda: now[0], seen=busy)
    assert auto.rest() == 0 and 1 not in busy and RESTING not in busy
    assert auto.length(10) > 0


def test_step_times_carry_over_to_the_next_generation():
    """A drafted step that costs far more than the curve says (the Python around it) stops the
    drafting within one generation; a later generation sharing its step times (models/costs.clock)
    does not draft at all, where one without them drafts at first again."""
    mid = [0.0] + [1.0 + 0.1 * (n - 1) for n in range(1, 17)]
    now, kept = [0.0], {}

    def generation(seen) -> list[int]:
        auto, picks = AutoLength(mid, clock=lambda: now[0], seen=seen), []
        resting = auto.rest()  # as the speculative loop asks: before the first step, after each other
        while len(picks) < 40:
            if resting:
                resting, g = resting - 1, 0
            else:
                g = auto.length(8)
                auto.update(g, int(0.8 * g))
                resting = auto.rest()
            picks.append(g)
            now[0] += mid[g + 1] + 3.0 * g  # each drafted token costs three steps more than the curve says
        return picks

    first = generation(kept)
    assert first[0] > 0 and first[-10:] == [0] * 10 and kept
    assert generation(kept) == [0] * 40
    assert generation(None)[0] > 0


def test_a_draft_models_plain_step_after_a_draft_is_not_timed():
    """With a draft model, a plain step right after a drafted one pays for the drafting around it
    (here 1.8 s, against 1.0 in a run of plain steps, as a rest takes them). Timed, it makes plain
    steps look dearer than drafts that lose (one accepted token for 2.4 s or more: 1.2 s a
    token), and a process that drafts never times a plain step otherwise: its later generations
    drafted at every step. Untimed, they rest but for a few probes."""
    curve = [0.0] + [1.0 + 0.2 * (n - 1) for n in range(1, 17)]
    now, seen, carry = [0.0], {}, {}

    def generation() -> list[int]:
        auto = AutoLength(curve, per_token=0.2, clock=lambda: now[0], seen=seen, carry=carry)
        picks, resting = [], auto.rest(idle=True)
        while len(picks) < 80:
            g = 0 if resting else auto.length(4)
            after_draft = bool(picks) and picks[-1] > 0
            now[0] += curve[g + 1] + 0.4 * g + (0.8 if g or after_draft else 0.0)
            if resting:
                resting -= 1
            else:
                auto.update(g, min(g, 1))
                resting = auto.rest(idle=True)
            picks.append(g)
        return picks

    generation()
    for _ in range(2):
        assert sum(g > 0 for g in generation()) <= 8


def test_step_times_are_shared_per_model_and_kind_of_draft(tiny_dirs):
    lm = decodelab.load(tiny_dirs["llama"][0])
    other = decodelab.load(tiny_dirs["qwen2"][0])
    kept = costs.clock(lm, "pld")
    kept[1] = 0.5
    assert costs.clock(lm.fresh(), "pld") is kept  # fresh() copies share it
    assert costs.clock(lm, "token_recycling") == {} and costs.clock(lm, "sps", other) == {}
    assert costs.clock(lm, "sps", other) is costs.clock(lm.fresh(), "sps", other.fresh())
    toy = ToyLM.random(8)  # no cache key: nothing says two toys are alike, so nothing is shared
    assert costs.clock(toy, "pld") is not costs.clock(toy, "pld")


def test_a_paused_clock_leaves_the_other_drafters_steps_untimed():
    """samd hands some steps to a second drafter: the AutoLength that pauses keeps its own steps'
    times and not the other's (a 100-second step here), and charges the switch after it."""
    now = [0.0]
    auto = AutoLength([0.0] + [1.0] * 17, clock=lambda: now[0], switch=0.5)
    for dt in (1.0, 1.2):  # the first step's time is never kept; the second runs 0.2 over the curve
        assert auto.length(2) == 2
        now[0] += dt
    auto.pause()
    now[0] += 100.0  # the other drafter's step
    assert auto.length(2) == 2
    now[0] += 1.7  # the curve's second, the switch (the shape changed) and the same 0.2
    auto.length(2)
    assert [round(e, 6) for e in auto.seen[2]] == [0.2, 0.2]


def test_an_idle_rest_lasts_until_the_next_probe():
    """A drafter of one kind (sps) whose acceptance makes drafting not pay rests until the step
    before its next probe instead of being asked at every step; the probe comes when it would
    have come asking, and a drafter of several kinds (rest() without idle) is asked every step."""
    curve = [0.0] + [1.0 + 0.5 * (n - 1) for n in range(1, 17)]  # a drafted token costs half a step
    picks = {}
    for idle in (False, True):
        auto = AutoLength(curve, clock=None)
        for _ in range(30):
            auto.update(2, 0)  # nothing accepted: drafting does not pay
        picks[idle], step = [], 0
        while step < 60:
            picks[idle].append((step, auto.length(4)))
            step += 1 + auto.rest(idle=idle)
    assert [s for s, g in picks[True] if g] == [s for s, g in picks[False] if g] == [15, 47]  # the probes
    assert len(picks[False]) == 60 and len(picks[True]) == 5  # asked at every step / around the probes only


def test_an_accepted_probe_of_a_draft_free_drafter_brings_the_next_one_soon():
    """After rejected drafts, a probe comes PROBE_EVERY idle steps later; when it is accepted and
    drafts cost nothing to make (lookups, token_recycling), the next probe comes PROBE_OK steps
    later instead of twice PROBE_EVERY. A draft model's probe (it pays its catching up) keeps the
    doubling."""
    curve = [0.0] + [1.0 + 0.5 * (n - 1) for n in range(1, 17)]
    for per_token, gap in ((0.0, PROBE_OK), (0.01, 2 * PROBE_EVERY)):
        auto = AutoLength(curve, per_token=per_token, clock=None)
        for _ in range(30):
            auto.update(2, 0)  # rejected: drafting does not pay
        probes = []
        for step in range(80):
            g = auto.length(4)
            if g:
                probes.append(step)
                auto.update(g, g)  # every probe accepted (one of them does not make drafting pay)
        assert probes[0] == PROBE_EVERY - 1 and probes[1] - probes[0] == gap, (per_token, probes)


def test_the_step_before_an_idle_rest_is_timed():
    """Its plain-step error is what every choice to draft is weighed against; the rest's steps are
    not timed (the next call measures nothing)."""
    now = [0.0]
    curve = [0.0] + [1.0 + 0.5 * (n - 1) for n in range(1, 17)]
    auto = AutoLength(curve, clock=lambda: now[0])
    for _ in range(30):
        auto.update(2, 0)
    for _ in range(2):  # the first step's time is never kept
        assert auto.length(4) == 0
        now[0] += 1.3
    assert auto.rest(idle=True) == PROBE_EVERY - 3
    now[0] += 50.0  # the rest's steps
    auto.length(4)
    assert [round(e, 6) for e in auto.seen[0]] == [0.3]


def test_acceptance_and_the_probe_wait_outlive_a_generation():
    """With `carry`, a generation after one whose drafts were rejected starts without drafting
    and probes after the wait the last one reached; one after a well-accepted generation drafts
    from its first step."""
    curve = [0.0] + [1.0 + 0.7 * (n - 1) for n in range(1, 17)]  # a drafted token costs 0.7 of a step

    def generation(carry, accept: bool, steps: int = 100) -> list[int]:
        auto, picks = AutoLength(curve, clock=None, carry=carry), []
        for _ in range(steps):
            g = auto.length(4)
            picks.append(g)
            auto.update(g, g if accept else 0)
        return picks

    carry: dict = {}
    first = generation(carry, accept=False)
    assert first[0] > 0  # the prior's 0.6: the first steps draft
    wait = carry[None][2]  # the wait before the next probe, doubled at each probe of the first generation
    assert wait == PROBE_EVERY * 2 ** len([g for g in first[first.index(0):] if g])
    second = generation(carry, accept=False)
    assert second[0] == 0 and [i for i, g in enumerate(second) if g] == [wait - 1]  # its first probe
    assert generation({}, accept=False)[0] > 0  # without carry each generation starts from the prior
    good: dict = {}
    generation(good, accept=True)
    assert generation(good, accept=True)[0] == 4


def test_a_draft_models_first_steps_are_not_timed():
    """A generation's first steps run slow after the prompt's prefills: a draft-free drafter's first
    step is not timed, a draft model's first UNTIMED are not (its first drafted steps, timed,
    rested sps on zoo:code-target on torch where gamma 2 pays)."""
    for per_token, untimed in ((0.0, 1), (0.5, UNTIMED)):
        now = [0.0]
        auto = AutoLength(FLAT, per_token=per_token, clock=lambda: now[0])
        for step in range(untimed + 2):
            auto.length(1)
            now[0] += 100.0 if step < untimed else FLAT[2] + per_token + 0.25
        auto.length(1)
        assert list(auto.seen[1]) == pytest.approx([0.25, 0.25])


def test_a_draft_models_catching_up_is_not_charged_to_its_step():
    """What a step spends beyond its draft length's cost (a draft model catching up on a rest's
    tokens) is discounted from its time: the step after a rest of sps on zoo:code-target on torch
    ran 1.4-2.3 ms over the curve against 0.8 ms in a run of drafted steps. The drafter says so
    when its draft is more than two tokens behind, and not in step."""
    now = [0.0]
    auto = AutoLength(FLAT, per_token=0.5, clock=lambda: now[0])
    for _ in range(UNTIMED):
        auto.length(1)
        now[0] += 1.0
    for spent in (0.0, 3.0, -0.1):  # a catch-up timed below a drafted token's cost discounts nothing
        auto.length(1)
        auto.discount(spent)
        now[0] += FLAT[2] + 0.5 + 0.25 + max(spent, 0.0)
    auto.length(1)
    assert list(auto.seen[1]) == pytest.approx([0.25, 0.25, 0.25])



def test_drafting_rests_when_its_timed_steps_lose_to_plain_ones(monkeypatch):
    """Paid: where the model keeps choosing to draft (here best_length is made to say 4 whatever
    the costs) but the drafted steps, as timed, commit fewer tokens per second than plain steps,
    the auto takes PROBE_EVERY plain steps once PAID_STEPS drafted steps are timed, then drafts again
    and, losing again, rests twice as long; a rest cut short by the generation's end is taken up by
    the next generation that shares the step times, for what is left of it by the clock; drafted
    steps that pay, or lose by less than PAID_SHARE, never rest."""
    from decodelab.core import costs as core_costs
    from decodelab.core.costs import PAID_STEPS

    monkeypatch.setattr(core_costs, "best_length", lambda *a, **k: 4)
    now, seen = [0.0], {}

    def steps(auto, n, seconds, accepted):  # n drafted steps of `seconds` each; -> the rest asked after the last
        for _ in range(n):
            assert auto.length(8) == 4
            now[0] += seconds
            auto.update(4, accepted)
            rest = auto.rest()
        return rest

    paying = AutoLength(LINEAR, clock=lambda: now[0], seen={})
    assert steps(paying, 40, 2.0, 4) == 0  # 5 tokens in 2 s against a plain step's 1 in 1 s
    close = AutoLength(LINEAR, clock=lambda: now[0], seen={})
    assert steps(close, 40, 1.5, 0) == 0  # 1 token in 1.5 s: within PAID_SHARE, the model's call
    auto = AutoLength(LINEAR, clock=lambda: now[0], seen=seen)
    assert steps(auto, PAID_STEPS + 1, 4.0, 0) == 0  # 1 token in 4 s: the first step is never timed
    assert auto.length(8) == 0  # the window is full: this step is a plain one, and then a rest
    now[0] += 1.0
    assert auto.rest() == PROBE_EVERY
    now[0] += PROBE_EVERY * 1.0
    assert steps(auto, 1, 4.0, 0) == 0  # drafts again; that step is timed at the next call
    assert auto.length(8) == 0
    now[0] += 1.0
    assert auto.rest() == 2 * PROBE_EVERY
    now[0] += 5.0  # the generation ends 5 plain steps into its rest
    nxt = AutoLength(LINEAR, clock=lambda: now[0], seen=seen)
    assert nxt.rest() == 2 * PROBE_EVERY - 5
