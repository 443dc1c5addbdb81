"""ccd: the adaptive budget on hand-built logits (warm-up, the growing buffer, stable positions
with an unchanged argmax, the uniform fallback), the window average, its limits (window 1 without
the adaptive budget is llada), blocks and caches, the zoo model, and its refusals."""
import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.methods.ccd import stable
from methods.diffusion_helpers import ScriptedLM, commits, peaked, tiny_lm, zoo_task_run

TOKENS = [2, 3, 4, 5, 6, 7]
CONF = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]


def test_adaptive_budget_step_by_step():
    """warmup 2, k = 1: steps 0 and 1 take the top-1; the buffer v is 1, then 2, 3, 4, ...; from
    step 2 the positions of this step's top-v that were in the previous top-v with the same x0
    are all unmasked: step 2 {2} (top-3 {2,3,4} vs {1,2}), step 3 {3,4}, step 4 {5}."""
    lm = ScriptedLM(lambda n, region: peaked(TOKENS, CONF), 6)
    assert commits(lm, [7], "ccd", 6, window=1, warmup=2) == [[0], [1], [2], [3, 4], [5]]
    assert commits(lm, [7], "ccd", 6, window=1, warmup=2, adaptive=False) == [[0], [1], [2], [3], [4], [5]]
    # the default warm-up (5 steps) leaves one stable step in 6 positions
    assert commits(lm, [7], "ccd", 6, window=1) == [[0], [1], [2], [3], [4], [5]]


def test_a_changed_argmax_is_not_stable():
    """At step 3 position 4 predicts another token: only 3 is stable; at step 4 it is back, but
    differs from step 3's, so 5 goes first."""
    def script(n, region):
        return peaked([2, 3, 4, 5, 2 if n == 3 else 6, 7], CONF)

    lm = ScriptedLM(script, 6)
    assert commits(lm, [7], "ccd", 6, window=1, warmup=2) == [[0], [1], [2], [3], [5], [4]]


def test_fallback_to_uniform_top_k_when_fewer_than_k_are_stable():
    """steps = 3 (k = 2), warmup 1: step 1's top-3 {2, 3, 4} shares nothing with step 0's top-2
    {0, 1}; at step 2 only 4 is stable (5 was not in step 1's top-3): fewer than k, so both
    fall back to the uniform top-2."""
    lm = ScriptedLM(lambda n, region: peaked(TOKENS, CONF), 6)
    assert commits(lm, [7], "ccd", 6, window=1, warmup=1, steps=3) == [[0, 1], [2, 3], [4, 5]]
    # k = 1 (steps 6): every stable position is enough
    assert commits(lm, [7], "ccd", 6, window=1, warmup=1) == [[0], [1], [2, 3], [4, 5]]


def test_window_average_rectifies_the_proposal():
    """Position 0 predicts token 2 at 0.6, then token 3 at 0.5: the average of the two steps
    still prefers token 2 (0.34 against 0.28); one step alone takes token 3."""
    def script(n, region):
        return peaked([2 if n == 0 else 3, 4], [0.6 if n == 0 else 0.5, 0.9])

    lm = ScriptedLM(script, 2)
    assert decodelab.generate(lm, [7], "ccd", max_new_tokens=2, ignore_eos=True).tokens == [2, 4]
    assert decodelab.generate(lm, [7], "ccd", max_new_tokens=2, ignore_eos=True, window=1).tokens == [3, 4]


def test_stable_does_not_modify_its_inputs():
    conf, x0 = torch.tensor([0.9, -float("inf"), 0.5], dtype=torch.float64), torch.tensor([2, 3, 4])
    c0, x00 = conf.clone(), x0.clone()
    top, cand = stable(conf, x0, 5, torch.tensor([0, 2]), torch.tensor([2, 3, 5]))
    assert top.tolist() == [0, 2] and cand.tolist() == [0]
    assert torch.equal(conf, c0) and torch.equal(x0, x00)


@pytest.mark.parametrize("block", [None, 8])
def test_window_one_without_adaptive_budget_is_llada(block):
    lm = tiny_lm("bert")
    for steps in (24, 12):
        want = decodelab.generate(lm, [5, 17, 300], "llada", max_new_tokens=24, ignore_eos=True, steps=steps,
                                  block_length=block)
        got = decodelab.generate(lm, [5, 17, 300], "ccd", max_new_tokens=24, ignore_eos=True, steps=steps,
                                 block_length=block, window=1, adaptive=False)
        assert got.tokens == want.tokens and got.stats.nfe == want.stats.nfe


def test_on_the_zoo_model():
    for block in (None, 8):
        acc, nfe = zoo_task_run("ccd", block, steps=12)
        assert acc >= 0.75 and nfe <= 12, (block, acc, nfe)


def test_caches_forward_fewer_tokens():
    lm = tiny_lm("llama")
    fwd = {c: decodelab.generate(lm, [5, 17, 300, 42], "ccd", max_new_tokens=24, ignore_eos=True, block_length=8,
                                 cache=c).stats.forwarded_tokens for c in ("none", "prefix", "dual")}
    assert fwd["dual"] < fwd["prefix"] < fwd["none"]


@pytest.mark.parametrize("kw, match", [
    (dict(steps=7), "steps \\(7\\) must be a multiple of the number of blocks \\(1\\) and at most max_new_tokens"),
    (dict(window=0), "window"),
    (dict(warmup=0), "warmup"),
    (dict(expand=-1.0), "expand"),
    (dict(cache="prefix"), "needs a model with a KV cache"),
])
def test_bad_options_are_refused(kw, match):
    lm = ScriptedLM(lambda n, region: peaked(TOKENS, CONF), 6)
    with pytest.raises(DecodeLabError, match=match):
        decodelab.generate(lm, [7], "ccd", max_new_tokens=6, **kw)
