import pytest

import decodelab
from decodelab import DecodeLabError
from decodelab.methods.astar import State, _children
from decodelab.models import ToyLM
from decodelab.rewards import Function
from decodelab.zoo import tasks
from methods.search_helpers import recorded, request  # noqa: F401


def test_needs_a_reward():
    with pytest.raises(DecodeLabError, match="reward"):
        decodelab.generate(ToyLM.random(5), [1], "astar", max_new_tokens=4)


def test_g_accumulates_only_increases_of_h():
    req = request(ToyLM.random(8), [1])
    reward = Function(lambda prompt, text: {"1": 0.5, "1 2": 0.8, "1 3": 0.2, "1 3 4": 0.9}.get(text, 0.0))
    order = iter(range(100))
    root = _children(req, reward, None, [([1], [0.0], False)], order)[0]
    assert (root.g, root.h) == (0.0, 0.5)
    better, worse = _children(req, reward, root, [([1, 2], [0, 0], False), ([1, 3], [0, 0], False)], order)
    assert (better.g, better.h, better.f) == (0.0, pytest.approx(0.2), pytest.approx(0.2))
    assert (worse.g, worse.h) == (pytest.approx(0.3), pytest.approx(0.8))  # h rose by 0.3: g keeps it
    recovered, = _children(req, reward, worse, [([1, 3, 4], [0, 0, 0], False)], order)
    assert (recovered.g, recovered.h, recovered.f) == (pytest.approx(0.3), pytest.approx(0.1), pytest.approx(0.4))
    assert better < recovered < worse  # lower f first; the heap pops in this order
    assert State(0.5, -3, 9, [], [], 0, 0.5, False) < State(0.5, -2, 1, [], [], 0, 0.5, False)  # deeper first


def test_astar_with_the_step_checker_fixes_greedy_arithmetic(recorded):
    """On zoo arithmetic problems greedy gets wrong, A* with the step checker finds correct solutions,
    sampling k candidate steps at once and within its token budget."""
    model = decodelab.load("zoo:tasks-ar")
    exs = tasks.examples("arithmetic", "test", 30, seed=0)
    wrong = [ex for ex in exs if not tasks.score(ex, decodelab.generate(model, ex.prompt, max_new_tokens=46).text)]
    assert len(wrong) >= 4, "the test needs problems greedy gets wrong"
    solved = 0
    for i, ex in enumerate(wrong):
        recorded.clear()
        out = decodelab.generate(model, ex.prompt, "astar", reward="arithmetic", k=4, max_new_tokens=46, seed=i,
                                 temperature=0.8)
        solved += tasks.score(ex, out.text)
        sampled = sum(len(t.tokens) for _, trials in recorded for t in trials)
        assert sampled <= 4 * 46 and all(len(trials) == 4 for _, trials in recorded)
        assert all(len(contexts) == 1 for contexts, _ in recorded)  # each expansion extends one state
    assert solved >= len(wrong) * 3 // 4, (solved, len(wrong))


def test_the_budget_bounds_the_sampled_tokens(recorded):
    lm = ToyLM.random(6, order=2, seed=1, eos_token_id=0)
    out = decodelab.generate(lm, [1, 2], "astar", reward=lambda p, t: 0.1, k=3, max_search_tokens=10,
                             max_new_tokens=20, seed=0)
    sampled = sum(len(t.tokens) for _, trials in recorded for t in trials)
    assert sampled <= 10 and len(out.tokens) <= 10


def test_seeded_runs_repeat():
    lm = ToyLM.random(6, order=2, seed=1, eos_token_id=0)
    kw = dict(reward=lambda p, t: (len(t.split()) % 3) / 2, k=3, max_new_tokens=20)
    assert (decodelab.generate(lm, [1, 2], "astar", seed=4, **kw).tokens
            == decodelab.generate(lm, [1, 2], "astar", seed=4, **kw).tokens)
