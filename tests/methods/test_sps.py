"""SpS: greedy equality with plain greedy (tiny models of every architecture), exact sampling on
ToyLM pairs, the heuristic gamma schedule, config validation."""
import pytest
import torch
from methods.spec_helpers import check_converges, greedy_reference, noisy_copy, one_thread, request  # noqa: F401

import decodelab
from decodelab.core.sampling import SamplingConfig
from decodelab.core.tree import Draft, TokenTree
from decodelab.errors import DecodeLabError
from decodelab.methods.sps import HeuristicChainDrafter, SpSConfig

PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.mark.parametrize("kw", [dict(gamma=5), dict(gamma=1), dict(gamma=3, schedule="heuristic")])
def test_greedy_equals_greedy(tiny_pair, one_thread, kw):
    """A 1-layer random draft (rarely right) and a noisy copy of the target (often right)."""
    arch, target, draft = tiny_pair
    ref = greedy_reference(target, PROMPT, 40)
    for d in (draft, noisy_copy(target, 0.15)):
        out = decodelab.generate(target, PROMPT, "sps", draft=d, max_new_tokens=40, ignore_eos=True, **kw)
        assert out.tokens == ref, (arch, kw)
        assert out.stats.new_tokens == 40
    assert out.stats.tau > 1.0  # the noisy copy's drafts do get accepted: the test exercises commits


def test_self_draft_accepts_everything(tiny_pair, one_thread):
    _, target, _ = tiny_pair
    out = decodelab.generate(target, PROMPT, "sps", draft=target.fresh(), max_new_tokens=36, gamma=5,
                             ignore_eos=True)
    assert out.stats.committed == [6] * 6  # gamma accepted + the bonus, every step
    assert out.stats.tau == 6.0


def test_heuristic_schedule_moves_gamma():
    drafter = HeuristicChainDrafter.__new__(HeuristicChainDrafter)
    drafter.gamma = 5
    chain = Draft(TokenTree.chain([0, 1, 2, 3, 4, 5]))
    drafter.observe(chain, [0, 1, 2, 3, 4, 5], None)  # all 5 accepted
    assert drafter.gamma == 7
    drafter.observe(Draft(TokenTree.chain(list(range(8)))), [0, 1], None)
    assert drafter.gamma == 6
    drafter.gamma = 1
    drafter.observe(Draft(TokenTree.chain([0, 1])), [0], None)
    assert drafter.gamma == 1


def test_config_validation():
    with pytest.raises(DecodeLabError, match="gamma"):
        SpSConfig(gamma=0)
    with pytest.raises(DecodeLabError, match="schedule"):
        SpSConfig(schedule="fast")


def test_sampling_records_processed_q(toy_pair):
    target, draft = toy_pair
    from decodelab.loops.drafting import ChainDrafter

    s = SamplingConfig(do_sample=True, temperature=0.7, top_k=3)
    d = ChainDrafter(request(draft, draft, s, torch.Generator().manual_seed(0)), gamma=3)
    prop = d.propose(torch.tensor([1, 2]), 3)
    assert prop.q.shape == (4, 6)
    assert torch.allclose(prop.q[:3].sum(-1), torch.ones(3)) and float(prop.q[3].sum()) == 0.0
    assert bool(((prop.q[:3] > 0).sum(-1) <= 3).all())  # top-k applied to q as to p


@pytest.mark.parametrize("kw", [dict(schedule="heuristic", gamma=2), dict(top_p=0.8, temperature=0.8)])
def test_sampling_matches_target_distribution(toy_pair, one_thread, kw):
    target, draft = toy_pair
    check_converges("sps", target, draft, sizes=(150, 1200), **kw)


@pytest.mark.slow
def test_sampling_matches_target_distribution_large(toy_pair, one_thread):
    target, draft = toy_pair
    check_converges("sps", target, draft, sizes=(1000, 16000), gen=6)


def test_the_draft_says_what_catching_up_cost(toy_pair, monkeypatch):
    """A draft-model drafter sized by an AutoLength (loops.drafting) tells it what a sync that
    catches up on more than the last step's tokens cost (the prompt, a rest's tokens), so that
    it is not charged to the step's draft length; a sync in step says nothing."""
    from decodelab.core import costs as core_costs
    from decodelab.methods.sps import AutoChainDrafter

    target, draft = toy_pair
    told = []
    monkeypatch.setattr(core_costs.AutoLength, "discount", lambda self, seconds: told.append(seconds))
    drafter = AutoChainDrafter(request(target, draft))
    drafter.root_logits(torch.tensor([1, 2, 1, 2, 1]))  # the prompt: five tokens behind
    assert len(told) == 1
    drafter.root_logits(torch.tensor([1, 2, 1, 2, 1, 3, 4]))  # the last step's two tokens
    assert len(told) == 1
    drafter.root_logits(torch.tensor([1, 2, 1, 2, 1, 3, 4, 5, 0, 1]))  # a rest's three and one more
    assert len(told) == 2
