import pytest
import torch

import decodelab
from methods.spec_helpers import (FLAT, LINEAR, STEP, drafted_sizes, equal_to_greedy, planted_auto_tree, planted_auto_tvs,
                                  two_token_tvs)
from decodelab.core.tree import Draft, TokenTree
from decodelab.errors import DecodeLabError
from decodelab.core.costs import AutoLength
from decodelab.methods.aded import ADEDConfig, PUCTDrafter, TrigramMatrix
from decodelab.models import ToyLM


def test_config_validation():
    with pytest.raises(DecodeLabError, match="budget"):
        ADEDConfig(budget=0)
    with pytest.raises(DecodeLabError, match="c_puct"):
        ADEDConfig(c_puct=-1.0)
    with pytest.raises(DecodeLabError, match="no option"):
        decodelab.generate(ToyLM.random(4), [1, 2], "aded", width=3)


def test_matrix_probabilities_and_bigram_backoff():
    m = TrigramMatrix()
    m.add(1, 2, 3, 3.0)
    m.add(1, 2, 4, 1.0)
    m.add(7, 2, 5, 4.0)
    assert m.candidates(1, 2, 5) == [(3, 0.75), (4, 0.25)]
    assert m.candidates(1, 2, 1) == [(3, 0.75)]  # P over the whole context, not the top-n
    assert m.candidates(9, 2, 1) == [(5, 0.5)]  # unseen (9, 2): bigram "2 ->" has 3:3, 4:1, 5:4
    assert m.candidates(9, 9, 3) == []


def test_fold_and_observe_update_the_matrix():
    m = TrigramMatrix()
    d = PUCTDrafter(m, ADEDConfig(topk=2, budget=4))
    d.propose(torch.tensor([5, 6, 7, 5, 6]), max_depth=3)  # folds the prompt's tri-grams in
    assert m.tri[(5, 6)] == {7: 1.0} and m.tri[(6, 7)] == {5: 1.0} and m.tri[(-1, 5)] == {6: 1.0}
    draft = d.propose(torch.tensor([5, 6, 7, 5, 6]), max_depth=3)
    assert draft.tree.tokens.tolist()[:4] == [6, 7, 5, 6]  # the only path the matrix knows
    tree = TokenTree.from_lists([6, 7, 1], [-1, 0, 1])
    logits = torch.full((3, 10), -30.0)
    logits[0, [7, 2]] = torch.tensor([0.0, -1.0])  # at the root, context (5, 6)
    logits[2, [4, 3]] = torch.tensor([0.0, 0.0])  # at node 2, context (7, 1)
    d.observe(Draft(tree), [0, 1], logits)
    p7, p2 = torch.softmax(torch.tensor([0.0, -1.0]), 0).tolist()
    assert m.tri[(5, 6)][7] == pytest.approx(1.0 + p7, rel=1e-5) and m.tri[(5, 6)][2] == pytest.approx(p2, rel=1e-5)
    assert m.tri[(7, 1)][4] == pytest.approx(0.5, rel=1e-5) and m.tri[(7, 1)][3] == pytest.approx(0.5, rel=1e-5)


def test_puct_tree_respects_budget_depth_and_prefers_likely_paths():
    m = TrigramMatrix()
    for x in range(8):  # from any context, 1 is three times as likely as 2 and 3 after it
        for y in range(8):
            m.add(x, y, 1, 6.0), m.add(x, y, 2, 2.0), m.add(x, y, 3, 2.0)
    d = PUCTDrafter(m, ADEDConfig(budget=10, depth=4, branch=3))
    tree = d.propose(torch.tensor([0, 5]), max_depth=4).tree
    assert len(tree) == 11 and int(tree.depths.max()) <= 4
    assert all(p < i for i, p in enumerate(tree.parent_list) if i)
    assert tree.path_to(int((tree.depths == tree.depths.max()).nonzero()[0]))  # a valid deep path
    top_chain = [0]
    while True:  # follow the token-1 children: the likeliest path must be drafted to full depth
        nxt = [c for c in tree.children[top_chain[-1]] if int(tree.tokens[c]) == 1]
        if not nxt:
            break
        top_chain.append(nxt[0])
    assert len(top_chain) - 1 == 4
    assert len(d.propose(torch.tensor([0, 5]), max_depth=0).tree) == 1
    assert len(tree.children[0]) == 3  # exploration also tried the root's other candidates
    # drafting order: no exploration (c_puct = 0) drafts the likeliest chain to the depth cap first;
    # strong exploration drafts the root's other candidates before the chain is complete
    def first_drafted(c_puct):
        t = PUCTDrafter(m, ADEDConfig(budget=10, depth=4, branch=3, c_puct=c_puct)).propose(
            torch.tensor([0, 5]), max_depth=4).tree
        assert len(t) == 11
        return t.tokens.tolist()[:5], t.parent_list[:5]
    assert first_drafted(0.0) == ([5, 1, 1, 1, 1], [-1, 0, 1, 2, 3])
    assert first_drafted(50.0)[1] != [-1, 0, 1, 2, 3]


def test_greedy_equality_tiny_models(tiny_pair):
    arch, target, _ = tiny_pair
    g = torch.Generator().manual_seed(7)
    prompt = torch.randint(0, target.vocab_size, (12,), generator=g).tolist()
    state = decodelab.State()
    equal_to_greedy("aded", target, prompt, 40, state=state)
    own = decodelab.generate(target, prompt, "greedy", max_new_tokens=60, ignore_eos=True).tokens
    out = equal_to_greedy("aded", target, prompt + own + prompt, 40, budget=12, c_puct=2.0, state=state)
    assert out.stats.tau > 1.0, arch


def test_greedy_equality_toy_and_budget_edges():
    toy = ToyLM.random(6, order=2, seed=0, scale=3.0, eos_token_id=5)
    prompt = [1, 2, 3, 1, 2, 3, 1, 2]
    state = decodelab.State()
    for n in (1, 2, 3, 17):
        equal_to_greedy("aded", toy, prompt, n, state=state, reset=True)
    # a fixed tree: how much the warm matrix gets accepted (the auto default sizes trees by the toy's costs)
    assert equal_to_greedy("aded", toy, prompt, 40, state=state, budget=8).stats.tau > 2
    ref = decodelab.generate(toy, prompt, "greedy", max_new_tokens=30)
    assert decodelab.generate(toy, prompt, "aded", max_new_tokens=30).tokens == ref.tokens


def test_sampling_distribution_on_toy():
    toy = ToyLM.random(5, order=2, seed=4, scale=1.5)
    tvs, accepted = two_token_tvs("aded", toy, [1, 2, 1, 2, 1], 0.8, budget=4, state=decodelab.State())
    assert accepted > 100  # the adapted matrix's guesses were accepted in many runs
    assert tvs[1] < tvs[0] and tvs[1] < 0.08, tvs



@pytest.mark.parametrize("curve, drafts", [(FLAT, True), (LINEAR, False)])
def test_auto_budget_is_lossless_and_drafts_when_it_pays(curve, drafts, monkeypatch):
    """budget auto (the default) on planted cost curves: trees where a forward's tokens are nearly
    free, the root alone where each token costs as much as the first; greedy's output either way."""
    scored, steps = planted_auto_tree("aded", curve, monkeypatch)
    assert (scored > 3 * steps) if drafts else (scored == steps)


def test_auto_budget_follows_the_measured_acceptance():
    """The AutoLength sizes each tree: trees whose guesses are rejected give way to plain steps
    (the root alone, a 1-node probe now and then), accepted ones grow back; each size's depth is
    learned from the trees built at it."""
    config = ADEDConfig(topk=0)
    auto = AutoLength(STEP, clock=None, depth_of=list(range(7)))
    d = PUCTDrafter(TrigramMatrix(), config, auto, most=6)
    ctx = torch.tensor([1, 2, 3, 1, 2, 3, 1, 2])  # the matrix learns the cycle 1 -> 2 -> 3 -> 1: chains

    first = drafted_sizes(d, ctx, False, 1)[0]
    assert first >= 2  # the prior's acceptance: a tree
    assert auto.depth_of[first] == first  # the cycle has one candidate per context: a chain
    late = drafted_sizes(d, ctx, False, 40)[20:]
    assert late.count(0) >= 18 and max(late) <= 1  # rejected: plain steps, a 1-node probe at most
    assert drafted_sizes(d, ctx, True, 60)[-1] >= first
    assert PUCTDrafter(TrigramMatrix(), config).rest() == 0  # a fixed budget never rests


def test_a_bushy_size_is_valued_at_its_depth():
    """Where the matrix offers several candidates per context, a tree of n nodes is shallower than
    n, and the depth learned for its size is what the AutoLength values it at."""
    m = TrigramMatrix()
    for z in (5, 6, 7):  # three candidates after every context: PUCT spreads its nodes
        for x in range(-1, 10):
            for y in range(10):
                m.add(x, y, z, 1.0)
    auto = AutoLength(FLAT, clock=None, depth_of=list(range(16)))
    d = PUCTDrafter(m, ADEDConfig(topk=0, branch=3), auto, most=15)
    draft = d.propose(torch.tensor([1, 2]), max_depth=10)
    n = len(draft.tree) - 1
    assert n >= 6 and auto.depth_of[n] == d._depth < n


def test_auto_sampling_distribution_on_toy(monkeypatch):
    """budget auto in sampling mode: every tree size the AutoLength picks is verified exactly."""
    planted_auto_tvs("aded", monkeypatch)
