"""RSD-C and RSD-S: tree shapes, siblings drawn without replacement, greedy equality with plain
greedy (tiny models of every architecture), exact sampling on ToyLM pairs."""
import pytest
import torch
from methods.spec_helpers import (FLAT, LINEAR, check_converges, greedy_reference, noisy_copy, one_thread,  # noqa: F401
                                  request)

import decodelab
from decodelab.core.sampling import SamplingConfig
from decodelab.errors import DecodeLabError
from decodelab.methods.rsd import RSDCConfig, RSDCDrafter, RSDSConfig, RSDSDrafter
from decodelab.models import ToyLM

PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]
SAMPLE = SamplingConfig(do_sample=True)


def _check_siblings(draft):
    tree = draft.tree
    for kids in tree.children:
        toks = tree.tokens[kids].tolist()
        assert len(set(toks)) == len(toks)  # without replacement
        if draft.q is not None and kids:
            parent = tree.parent_list[kids[0]]
            assert bool((draft.q[parent][toks] > 0).all())
            assert abs(float(draft.q[parent].sum()) - 1) < 1e-5


def test_rsd_c_tree_shape(toy_pair):
    _, draft = toy_pair
    d = RSDCDrafter(request(draft, draft, SAMPLE, torch.Generator().manual_seed(0)), [3, 2, 1])
    prop = d.propose(torch.tensor([1, 2]), 5)
    assert len(prop.tree) == 1 + 3 + 6 + 6
    assert [len(c) for c in prop.tree.children][:4] == [3, 2, 2, 2]
    _check_siblings(prop)
    assert len(d.propose(torch.tensor([1, 2]), 2).tree) == 1 + 3 + 6  # depth capped by max_depth
    assert len(d.propose(torch.tensor([1, 2]), 0).tree) == 1


def test_rsd_c_greedy_children_are_top_k(toy_pair):
    _, draft = toy_pair
    prop = RSDCDrafter(request(draft, draft), [2]).propose(torch.tensor([1, 2]), 3)
    want = torch.topk(draft.next_logits([1, 2]), 2).indices.tolist()
    assert prop.tree.tokens[1:].tolist() == want and prop.q is None


def test_rsd_s_tree_shape(toy_pair):
    _, draft = toy_pair
    d = RSDSDrafter(request(draft, draft, SAMPLE, torch.Generator().manual_seed(0)), width=3, depth=4)
    for _ in range(5):
        prop = d.propose(torch.tensor([1, 2]), 10)
        depths = prop.tree.depths.tolist()
        assert max(depths) == 4
        assert all(depths.count(k) == 3 for k in range(1, 5))  # W nodes per depth
        _check_siblings(prop)


def test_rsd_s_greedy_is_beam_search(toy_pair):
    """Greedy RSD-S keeps the W most likely draft sequences of each length."""
    _, draft = toy_pair
    prop = RSDSDrafter(request(draft, draft), width=2, depth=2).propose(torch.tensor([1, 2]), 5)
    logq = lambda ctx: torch.log_softmax(draft.next_logits(ctx), -1)  # noqa: E731
    seqs = {(a, b): float(logq([1, 2])[a] + logq([1, 2, a])[b]) for a in range(6) for b in range(6)}
    first = torch.topk(logq([1, 2]), 2).indices.tolist()
    best2 = sorted((k for k in seqs if k[0] in first), key=seqs.get, reverse=True)[:2]
    tree = prop.tree
    leaves = {tuple(tree.tokens[p[1:]].tolist()) for p in tree.paths()}
    assert leaves == set(best2)


def test_config_validation():
    with pytest.raises(DecodeLabError, match="branches"):
        RSDCConfig(branches="3,x")
    with pytest.raises(DecodeLabError, match="branches"):
        RSDCConfig(branches="2x0")
    assert RSDCConfig(branches="3,2").branching == RSDCConfig(branches="3x2").branching == [3, 2]
    with pytest.raises(DecodeLabError, match="width"):
        RSDSConfig(width=0)
    assert RSDCConfig().branches == "auto" and RSDSConfig().depth is None and RSDSConfig().width == 2
    with pytest.raises(DecodeLabError, match="draft tokens"):
        RSDSConfig(width=64, depth=8)


@pytest.mark.parametrize("method,kw", [("rsd_c", dict(branches="3,2,2,1")), ("rsd_c", dict(branches="1x1x1")),
                                       ("rsd_s", dict(width=4, depth=4)), ("rsd_s", dict(width=2, depth=6))])
def test_greedy_equals_greedy(tiny_pair, one_thread, method, kw):
    """A 1-layer random draft (rarely right) and a noisy copy of the target (often right)."""
    arch, target, draft = tiny_pair
    ref = greedy_reference(target, PROMPT, 40)
    for d in (draft, noisy_copy(target, 0.15)):
        out = decodelab.generate(target, PROMPT, method, draft=d, max_new_tokens=40, ignore_eos=True, **kw)
        assert out.tokens == ref, (arch, method, kw)
    assert out.stats.tau > 1.0


def test_greedy_stops_at_eos(toy_pair):
    target, draft = toy_pair
    ref = decodelab.generate(target, [1, 2], max_new_tokens=30).tokens
    eos = ref[7]
    stopped = ToyLM(target.table, eos_token_id=eos)
    want = decodelab.generate(stopped, [1, 2], max_new_tokens=30).tokens
    for m in ("rsd_c", "rsd_s"):
        assert decodelab.generate(stopped, [1, 2], m, draft=draft, max_new_tokens=30).tokens == want


@pytest.mark.parametrize("method,kw", [("rsd_c", dict(branches="3x2", temperature=0.7, top_k=4)),
                                       ("rsd_s", dict(width=3, depth=2, top_p=0.8))])
def test_sampling_matches_target_distribution(toy_pair, one_thread, method, kw):
    target, draft = toy_pair
    check_converges(method, target, draft, sizes=(150, 1200), **kw)


CHEAP = [0.0] + [0.01] * 16  # the draft's forwards


def _weights(lm):
    """What a model's fresh() copies share: the transformers module, or a ToyLM's table."""
    return lm.table if isinstance(lm, ToyLM) else lm.model


def _plant(monkeypatch, target, curve):
    """`curve` for the target (and its fresh() copies), CHEAP for any other model."""
    from decodelab.models import costs

    monkeypatch.setattr(costs, "curve", lambda lm, n_max=16, context=0:
                        curve if _weights(lm) is _weights(target) else CHEAP)


@pytest.mark.parametrize("method", ["rsd_c", "rsd_s"])
@pytest.mark.parametrize("curve, drafts", [(FLAT, True), (LINEAR, False)])
def test_auto_levels_are_lossless_and_draft_when_it_pays(tiny_pair, one_thread, monkeypatch, method, curve, drafts):
    """The defaults (rsd_c: two chains; rsd_s: 2 beams) with the levels per step from an
    AutoLength: trees where a forward's tokens are nearly free, none where every token costs as
    much as the first; greedy's output either way."""
    arch, target, _ = tiny_pair
    ref = greedy_reference(target, PROMPT, 40)
    _plant(monkeypatch, target, curve)
    out = decodelab.generate(target, PROMPT, method, draft=noisy_copy(target, 0.15), max_new_tokens=40,
                             ignore_eos=True)
    assert out.tokens == ref, (arch, method)
    scored, forwards = out.stats.target_tokens_scored, out.stats.target_forwards
    assert (scored > 3 * forwards and out.stats.tau > 1.0) if drafts else (scored == forwards), (scored, forwards)


@pytest.mark.parametrize("method", ["rsd_c", "rsd_s"])
def test_auto_levels_sampling_matches_target_distribution(toy_pair, one_thread, monkeypatch, method):
    """Every tree the AutoLength sizes (a planted memory-bound curve, so trees are drafted) is
    verified exactly: siblings without replacement, recursive rejection sampling."""
    target, draft = toy_pair
    _plant(monkeypatch, target, FLAT)
    check_converges(method, target, draft, sizes=(150, 1200), temperature=0.8)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rsd_c", "rsd_s"])
def test_sampling_matches_target_distribution_large(toy_pair, one_thread, method):
    target, draft = toy_pair
    check_converges(method, target, draft, sizes=(1000, 16000), gen=6)
