"""DySpec: the tree is the greedy best-first tree by path probability under the budget, siblings
without replacement, greedy equality with plain greedy, exact sampling on ToyLM pairs."""
import dataclasses
import itertools
import math

import pytest
import torch
from methods.spec_helpers import check_converges, greedy_reference, noisy_copy, one_thread, request  # noqa: F401

import decodelab
from decodelab.core.sampling import SamplingConfig
from decodelab.errors import DecodeLabError
from decodelab.methods.dyspec import DySpecConfig, DySpecDrafter

PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]


def _path_logq(draft, prefix, seq):
    ctx, total = list(prefix), 0.0
    for x in seq:
        total += float(torch.log_softmax(draft.next_logits(ctx), -1)[x])
        ctx.append(x)
    return total


@pytest.mark.parametrize("budget,max_depth", [(10, 3), (25, 2), (7, 5)])
def test_greedy_tree_is_best_first_by_path_probability(toy_pair, budget, max_depth):
    """With expand=1 the tree holds exactly the `budget` most probable draft paths (every prefix of a
    kept path is kept, since values only shrink down a path)."""
    _, draft = toy_pair
    prop = DySpecDrafter(request(draft, draft), budget, expand=1).propose(torch.tensor([1, 2]), max_depth)
    tree = prop.tree
    got = {tuple(tree.tokens[tree.path_to(i)[1:]].tolist()) for i in range(1, len(tree))}
    every = [s for d in range(1, max_depth + 1) for s in itertools.product(range(6), repeat=d)]
    best = sorted(every, key=lambda s: _path_logq(draft, [1, 2], s), reverse=True)[:budget]
    assert got == set(best)


def test_batched_expansion_respects_budget_and_depth(toy_pair):
    _, draft = toy_pair
    d = DySpecDrafter(request(draft, draft, SamplingConfig(do_sample=True), torch.Generator().manual_seed(0)), 20, expand=4)
    for _ in range(5):
        prop = d.propose(torch.tensor([1, 2]), 3)
        assert len(prop.tree) == 21 and int(prop.tree.depths.max()) <= 3
        for kids in prop.tree.children:
            toks = prop.tree.tokens[kids].tolist()
            assert len(set(toks)) == len(toks)  # without replacement
            if kids:
                parent = prop.tree.parent_list[kids[0]]
                assert abs(float(prop.q[parent].sum()) - 1) < 1e-5
                assert bool((prop.q[parent][toks] > 0).all())
    assert len(d.propose(torch.tensor([1, 2]), 0).tree) == 1


def test_sampling_candidate_value_ignores_the_token_it_becomes(toy_pair):
    """The value of a not-yet-drawn child is an expectation over the residual q, so which token is
    drawn cannot decide whether it enters the tree (that would bias recursive rejection sampling)."""
    from decodelab.methods.dyspec import _Node

    q = torch.tensor([0.5, 0.3, 0.2])
    node = _Node(0, 0.0, q, greedy=False, most=10)
    assert math.isclose(node.next_value(), math.log(float((q * q).sum())), rel_tol=1e-6)
    node.draw(torch.Generator().manual_seed(0))
    r = node.residual / node.residual.sum()
    assert math.isclose(node.next_value(), math.log(float((r * q).sum())), rel_tol=1e-6)


def test_config_validation():
    with pytest.raises(DecodeLabError, match="budget"):
        DySpecConfig(budget=0)
    with pytest.raises(DecodeLabError, match="expand"):
        DySpecConfig(expand=0)


@pytest.mark.parametrize("kw", [dict(budget=24, expand=8), dict(budget=6, expand=1), dict(expand=8)])
def test_greedy_equals_greedy(tiny_pair, one_thread, kw):
    """A 1-layer random draft (rarely right) and a noisy copy of the target (often right)."""
    arch, target, draft = tiny_pair
    ref = greedy_reference(target, PROMPT, 40)
    for d in (draft, noisy_copy(target, 0.15)):
        out = decodelab.generate(target, PROMPT, "dyspec", draft=d, max_new_tokens=40, ignore_eos=True, **kw)
        assert out.tokens == ref, (arch, kw)
    assert out.stats.tau > 1.0


@pytest.mark.parametrize("kw", [dict(budget=5, expand=1, temperature=0.6, top_k=5),
                                dict(expand=2, temperature=0.6, top_k=5)])  # auto budget
def test_sampling_matches_target_distribution(toy_pair, one_thread, kw):
    target, draft = toy_pair
    check_converges("dyspec", target, draft, sizes=(150, 1200), **kw)


@pytest.mark.slow
def test_sampling_matches_target_distribution_large(toy_pair, one_thread):
    target, draft = toy_pair
    check_converges("dyspec", target, draft, sizes=(1000, 16000), gen=6)


def test_batched_rounds_grow_deep_for_a_confident_draft():
    """A peaked draft: batched rounds (expand=8) must not spend the budget on siblings of the root,
    but grow the same chain as exact best-first growth, one draft forward per depth."""
    from decodelab.models import ToyLM

    draft = ToyLM.random(6, order=2, seed=3, scale=6.0)
    trees = []
    for expand in (1, 8):
        d = DySpecDrafter(request(draft, draft), 6, expand=expand)
        for _ in range(3):  # let the running estimate of the first child's share settle
            prop = d.propose(torch.tensor([1, 2]), 8)
        trees.append((prop.tree.tokens.tolist(), prop.tree.parent_list))
    assert trees[0] == trees[1]
    assert trees[1][1] == list(range(-1, 6))  # a chain of 6


def _costs(monkeypatch, target, draft, step: float, draft_step: float = 0.0):
    """Cost curves: the target's n-token forward 1 + step (n - 1), the draft's draft_step n."""
    from decodelab.methods import dyspec

    def curve(lm, n_max=16, context=64):
        if lm is target:
            return [0.0] + [1.0 + step * (n - 1) for n in range(1, 17)]
        return [0.0] + [draft_step * n for n in range(1, 17)]

    monkeypatch.setattr(dyspec.costs, "curve", curve)


class _Clock:
    now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("step", [0.0, 0.05, 1.0])
def test_auto_tree_grows_while_a_node_pays_for_its_cost(toy_pair, monkeypatch, step):
    """budget=auto: a node joins while its value, over the extra target cost it brings, beats the
    tree's expected tokens per second. Free extra tokens and draft forwards: the tree fills the
    depth limit up to MAX_AUTO; tokens that cost a whole forward each: no node ever pays (a plain
    step); between them, a smaller tree whose every node's value beat step * E / T when it joined."""
    from decodelab.methods.dyspec import MAX_AUTO, AutoSize

    target, draft = toy_pair
    _costs(monkeypatch, target, draft, step)
    req = request(target, draft)
    auto = AutoSize(req, clock=_Clock())
    joined = []
    worth = auto.worth

    def watch(v):
        rate = auto.rate
        ok = worth(v)
        if ok:
            joined.append((v, rate))
        return ok

    auto.worth = watch
    prop = DySpecDrafter(req, None, expand=4, auto=auto).propose(torch.tensor([1, 2]), 3)
    n = len(prop.tree) - 1
    assert n == len(joined)
    if step == 0.0:
        assert n == MAX_AUTO  # 6 + 36 + 216 paths of depth <= 3 would fit
    elif step == 1.0:
        assert n == 0 and auto.value == 0.0
    else:
        assert 1 <= n < 30
        assert all(auto.rho * v / step > rate for v, rate in joined)


def test_auto_rests_when_no_tree_could_pay(toy_pair, monkeypatch):
    """When the measured time beyond the forwards makes even an always-accepted tree slower than
    plain steps, rest() hands the loop PROBE_MAX plain steps; the rest's time becomes the plain
    step's. A cheap step does not rest here, though nothing is accepted (the tree still pays)."""
    from decodelab.core.costs import PROBE_MAX
    from decodelab.methods.dyspec import AutoSize

    target, draft = toy_pair
    _costs(monkeypatch, target, draft, 0.1, 0.01)
    for beyond, rests in ((0.0, 0), (60.0, PROBE_MAX)):
        clock = _Clock()
        auto = AutoSize(request(target, draft), clock=clock)
        d = DySpecDrafter(request(target, draft), None, expand=4, auto=auto)
        for _ in range(4):
            prop = d.propose(torch.tensor([1, 2]), 3)
            d.observe(prop, [0], torch.zeros(len(prop.tree), 6))  # nothing accepted
            clock.now += auto._model + beyond  # the step took its modelled time plus `beyond`
        assert d.rest() == rests
    clock.now += 0.5 * PROBE_MAX  # the plain steps of the rest: 0.5 each
    d.propose(torch.tensor([1, 2]), 3)
    assert auto.memo["plain"] == pytest.approx(0.5)


def test_auto_rests_while_its_trees_lose_to_plain_steps(toy_pair, monkeypatch):
    """A tree that some acceptance would pay for, but that at the acceptance measured so far is
    expected to commit fewer tokens per second than plain steps, makes the generation rest
    PROBE_EVERY steps, then twice as long after each probe that does not pay either (at most
    PROBE_MAX); a probe that pays ends it (dyspec on zoo:code-target on llama.cpp grew trees that
    ran at 0.57-0.83x greedy). The rest outlives the generation: the next ones take the steps it had
    no room for, and then one drafts at its first step."""
    from decodelab.core.costs import PROBE_EVERY, PROBE_MAX
    from decodelab.methods.dyspec import AutoSize

    from decodelab.methods import dyspec

    target, draft = toy_pair
    _costs(monkeypatch, target, draft, 0.5, 0.01)
    memo: dict = {}  # what models/costs.clock keeps for a process (a toy model has no cache key to keep it by)
    monkeypatch.setattr(dyspec.costs, "clock", lambda lm, kind, other=None: memo)
    clock = _Clock()
    auto = AutoSize(request(target, draft), clock=clock)
    d = DySpecDrafter(request(target, draft), None, expand=4, auto=auto)

    def step(accepted: bool):
        prop = d.propose(torch.tensor([1, 2]), 3)
        path = [0, 1] if accepted and len(prop.tree) > 1 else [0]
        d.observe(prop, path, torch.zeros(len(prop.tree), 6))
        clock.now += auto._model
        return d.rest()

    # the first step is not timed (the draft's prefill) and the second's time is known at the third
    assert step(False) == 0 and step(False) == 0
    waits = [step(False)]
    while waits[-1] < PROBE_MAX and len(waits) < 10:
        clock.now += 1.0 * waits[-1]  # the rest's plain steps, 1.0 each
        waits.append(step(False))
    assert waits[:3] == [PROBE_EVERY, 2 * PROBE_EVERY, 4 * PROBE_EVERY] and waits[-1] == PROBE_MAX
    # the steps the rest had no room for (all: these steps end their 1-token generation) are the next
    # generations' (same model pair: the same memo), counted by their max_new_tokens, 100 here
    later = dataclasses.replace(request(target, draft), max_new_tokens=100)
    assert [AutoSize(later, clock=clock).rest() for _ in range(4)] == [PROBE_MAX, PROBE_MAX - 100, PROBE_MAX - 200, 0]
    # a probe that pays ends the rests and the wait starts again from PROBE_EVERY
    auto.accepted, auto._resting = 100.0, None
    assert step(True) == 0 and auto.memo["wait"] == PROBE_EVERY
