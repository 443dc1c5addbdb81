import pytest
import torch

import decodelab
from methods.spec_helpers import (FLAT, LINEAR, STEP, drafted_sizes, equal_to_greedy, planted_auto_tree, planted_auto_tvs,
                                  two_token_tvs)
from decodelab.core.costs import AutoLength
from decodelab.core.templates import TreeTemplate
from decodelab.core.tree import TokenTree
from decodelab.errors import DecodeLabError
from decodelab.core.sampling import SamplingConfig
from decodelab.methods.token_recycling import _RANK_PROBS, RecyclingDrafter, TokenRecyclingConfig, matrix, recycle, template
from decodelab.request import Request
from decodelab.types import DecodeStats
from decodelab.models import ToyLM


def test_reference_template_shape():
    t = template("2.2.2")
    assert len(t) - 1 == 80 and t.level_counts() == [8, 21, 25, 15, 8, 3] and t.max_rank == 7
    assert len(template("top24")) - 1 == 24 and template("top24").depth <= 6
    assert template("2.2.2").truncate(2).level_counts() == [8, 21]




def test_auto_trees_are_valued_at_their_depth(monkeypatch):
    """template=auto sizes trees up to what the curve covers (15 nodes), each valued at its depth:
    on a curve where a forward's tokens are nearly free it drafts the 6-node rank-0 chain, the
    deepest best-first tree, not a 15-node tree of the same depth that could commit no more."""
    from decodelab.models import costs

    assert [TreeTemplate.best_first(n, _RANK_PROBS, max_depth=6).depth for n in (1, 6, 7, 15)] == [1, 6, 6, 6]
    toy = ToyLM.random(12, order=1, seed=2, scale=3.0)
    monkeypatch.setattr(costs, "curve", lambda lm, n_max=16, context=0: FLAT)
    state = decodelab.State()
    equal_to_greedy("token_recycling", toy, [3, 7, 1, 3, 7], 40, state=state)  # M learns the toy's rows
    out = equal_to_greedy("token_recycling", toy, [3, 7, 1, 3, 7], 40, state=state)
    per_forward = out.stats.target_tokens_scored / out.stats.target_forwards
    assert 5 < per_forward <= 7, per_forward


@pytest.mark.parametrize("curve, drafts", [(FLAT, True), (LINEAR, False)])
def test_auto_template_is_lossless_and_drafts_when_it_pays(curve, drafts, monkeypatch):
    scored, steps = planted_auto_tree("token_recycling", curve, monkeypatch)
    # deep trees (the AutoLength sizes each one from the acceptance so far; M starts empty, so the
    # first steps' roots have no candidates), or the root alone
    assert (scored > 3 * steps) if drafts else (scored == steps)


def test_auto_tree_size_follows_the_measured_acceptance():
    """The AutoLength sizes each tree up to the template: trees whose guesses are rejected give
    way to plain steps (the root alone, a probe now and then), accepted ones grow back."""
    t = TreeTemplate.best_first(3, _RANK_PROBS, max_depth=6)
    m = torch.zeros(10, 8, dtype=torch.int32)
    d = RecyclingDrafter(m, t, AutoLength(STEP, clock=None), _RANK_PROBS)
    ctx = torch.tensor([1, 2])
    assert len(d.propose(ctx, max_depth=10).tree) == 1  # token 2 never scored: no candidates, no tree
    m[2] = torch.arange(1, 9)

    assert drafted_sizes(d, ctx, False, 1) == [3]  # the prior's acceptance: the whole template
    late = drafted_sizes(d, ctx, False, 40)[20:]
    assert late.count(0) >= 18 and max(late) <= 1  # rejected: plain steps, a 1-node probe at most
    assert drafted_sizes(d, ctx, True, 60)[-1] == 3


def test_config_validation():
    toy = ToyLM.random(8)
    with pytest.raises(DecodeLabError, match="template"):
        decodelab.generate(toy, [1, 2], "token_recycling", template="wide")
    with pytest.raises(DecodeLabError, match="topk >= 8"):
        decodelab.generate(toy, [1, 2], "token_recycling", template="2.2.2", topk=4)


def test_recycle_writes_topk_of_every_node_path_last():
    # tree: root 3 -> a:1, b:2 ; a -> c:2 (token 2 appears twice: node 2 rejected, node 3 on the path)
    tree = TokenTree.from_lists([3, 1, 2, 2], [-1, 0, 0, 1])
    V, k = 6, 2
    logits = torch.full((4, V), -5.0)
    logits[0, [1, 4]] = torch.tensor([3.0, 2.0])  # at root: 1 then 4
    logits[1, [2, 0]] = torch.tensor([3.0, 1.0])  # at node 1: 2 then 0
    logits[2, [5, 3]] = torch.tensor([3.0, 2.0])  # rejected node 2 (token 2): 5 then 3
    logits[3, [0, 1]] = torch.tensor([3.0, 2.0])  # path node 3 (token 2): 0 then 1
    m = torch.zeros(V, k, dtype=torch.int32)
    before = logits.clone()
    recycle(m, tree.tokens, logits, path=[0, 1, 3])
    assert m[3].tolist() == [1, 4] and m[1].tolist() == [2, 0]
    assert m[2].tolist() == [0, 1]  # the accepted-path node wins over the rejected duplicate
    assert m[0].tolist() == [0, 0] and m[5].tolist() == [0, 0]  # untouched rows
    assert torch.equal(logits, before)
    recycle(m, tree.tokens, logits, path=[0, 2])  # now node 2 is on the path, node 3 is not
    assert m[2].tolist() == [5, 3]


def test_drafter_fills_template_from_matrix():
    m = torch.zeros(10, 8, dtype=torch.int32)
    m[4] = torch.arange(8)
    m[0, 0], m[1, 0] = 9, 7
    d = RecyclingDrafter(m, template("2.2.2"))
    tree = d.propose(torch.tensor([2, 4]), max_depth=2).tree
    assert tree.tokens[:9].tolist() == [4, 0, 1, 2, 3, 4, 5, 6, 7]
    assert tree.tokens[9] == 9 and tree.tokens[17] == 7  # [0,0] -> M[0,0]; [1,0] -> M[1,0]
    assert int(tree.depths.max()) == 2
    assert len(d.propose(torch.tensor([4]), max_depth=0).tree) == 1
    # trees are cut by the depth they keep: the room left, which shrinks every step, builds no new ones
    full = d.template.depth
    for room in (full + 3, full + 2, full + 1, full, 3):
        assert int(d.propose(torch.tensor([4]), max_depth=room).tree.depths.max()) == min(room, full)
    assert sorted(d._cut) == [(len(d.template) - 1, depth) for depth in (2, 3, full)]


def test_state_size_for_a_4096_vocabulary():
    class Fake:
        vocab_size = 4096
    req = Request(target=Fake(), prompt=torch.tensor([1]), max_new_tokens=1, sampling=SamplingConfig(),
                  stats=DecodeStats())
    m = matrix(req, TokenRecyclingConfig())
    assert m.dtype == torch.int32 and m.element_size() * m.nelement() == 4096 * 8 * 4 < 2 * 2**20
    m[0, 0] = 7
    assert matrix(req, TokenRecyclingConfig()) is m  # the request's State keeps it
    assert not matrix(req, TokenRecyclingConfig(reset=True)).any()


@pytest.mark.parametrize("tmpl", ["2.2.2", "top12"])
def test_greedy_equality_tiny_models(tiny_pair, tmpl):
    arch, target, _ = tiny_pair
    g = torch.Generator().manual_seed(5)
    prompt = torch.randint(0, target.vocab_size, (12,), generator=g).tolist()
    state = decodelab.State()
    equal_to_greedy("token_recycling", target, prompt, 40, template=tmpl, state=state)
    own = decodelab.generate(target, prompt, "greedy", max_new_tokens=60, ignore_eos=True).tokens
    # warm state and a repetitive prompt
    out = equal_to_greedy("token_recycling", target, prompt + own + prompt, 40, template=tmpl, state=state)
    assert out.stats.tau > 1.0, arch


def test_auto_greedy_equality_tiny_models(tiny_pair):
    """template=auto on real models, with the machine's measured curve: whatever sizes it picks
    (plain steps included), the output is greedy's (whether it drafts is tested on planted curves)."""
    arch, target, _ = tiny_pair
    g = torch.Generator().manual_seed(6)
    prompt = torch.randint(0, target.vocab_size, (12,), generator=g).tolist()
    state = decodelab.State()
    own = decodelab.generate(target, prompt, "greedy", max_new_tokens=60, ignore_eos=True).tokens
    for p in (prompt, prompt + own + prompt):
        equal_to_greedy("token_recycling", target, p, 40, state=state)


def test_state_carries_over_only_when_passed_and_reset_forgets():
    # order 1: the next token depends on the last one only, so recycled rows stay exact
    toy = ToyLM.random(12, order=1, seed=2, scale=3.0)
    prompt = [3, 7, 1]
    state = decodelab.State()
    cold = equal_to_greedy("token_recycling", toy, prompt, 40, state=state, template="2.2.2")
    warm = equal_to_greedy("token_recycling", toy, prompt, 40, state=state, template="2.2.2")
    assert warm.stats.target_forwards < cold.stats.target_forwards
    assert warm.stats.tau > 4  # every drafted top-1 chain is the greedy path, up to depth 6
    again = equal_to_greedy("token_recycling", toy, prompt, 40, state=state, reset=True, template="2.2.2")
    assert again.stats.committed == cold.stats.committed
    # without a State every generation starts cold: nothing leaks from the runs above
    assert equal_to_greedy("token_recycling", toy, prompt, 40, template="2.2.2").stats.committed == cold.stats.committed


def test_greedy_equality_toy_and_budget_edges():
    toy = ToyLM.random(6, order=2, seed=0, scale=3.0, eos_token_id=5)
    prompt = [1, 2, 3, 1, 2, 3, 1, 2]
    for n in (1, 2, 3, 17):
        equal_to_greedy("token_recycling", toy, prompt, n)
    ref = decodelab.generate(toy, prompt, "greedy", max_new_tokens=30)
    assert decodelab.generate(toy, prompt, "token_recycling", max_new_tokens=30).tokens == ref.tokens


def test_sampling_distribution_on_toy():
    toy = ToyLM.random(5, order=2, seed=4, scale=1.5)
    # one State over the runs, so the matrix adapts and its guesses get accepted (each run stays exact)
    tvs, accepted = two_token_tvs("token_recycling", toy, [1, 2, 1, 2, 1], 0.8, template="top4",
                                  state=decodelab.State())
    assert accepted > 100  # drafts were accepted, so the accept path was sampled too
    assert tvs[1] < tvs[0] and tvs[1] < 0.08, tvs


def test_auto_sampling_distribution_on_toy(monkeypatch):
    """template=auto in sampling mode: every tree size the AutoLength picks is verified exactly."""
    planted_auto_tvs("token_recycling", monkeypatch)
