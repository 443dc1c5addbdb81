"""localleap: anchors and the relaxed threshold within their radius on hand-built logits (which
positions unmask at which step), its limits (relaxed = threshold is fast_dllm), the end-of-text
fill of finished blocks, blocks and caches, the zoo model, and its refusals."""
import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from methods.diffusion_helpers import ScriptedLM, commits, peaked, tiny_lm, zoo_task_run

# positions 0..7: one anchor (2, p = 0.95); within radius 4 of it 1, 3 and 6 clear 0.75; 7 (0.8)
# is too far; later steps have no anchor, so one position each (the most confident; the 0.8s, one
# token so their logit rows are equal bit for bit, in position order: a softmax over rows whose peak
# sits at different indices may round differently on another CPU's vector width)
CONF = [0.5, 0.8, 0.95, 0.8, 0.6, 0.7, 0.8, 0.8]
STATIC = ScriptedLM(lambda n, region: peaked([2, 3, 4, 3, 6, 7, 3, 3], CONF), 8)


def test_anchors_relax_their_neighbourhood():
    assert commits(STATIC, [5], "localleap", 8) == [[1, 2, 3, 6], [7], [5], [4], [0]]
    assert commits(STATIC, [5], "localleap", 8, radius=1) == [[1, 2, 3], [6], [7], [5], [4], [0]]
    assert commits(STATIC, [5], "localleap", 8, radius=0) == [[2], [1], [3], [6], [7], [5], [4], [0]]
    # relaxed = threshold: Fast-dLLM's rule
    assert commits(STATIC, [5], "localleap", 8, relaxed_threshold=0.9) == commits(STATIC, [5], "fast_dllm", 8)


def test_an_anchor_unmasked_earlier_no_longer_relaxes():
    """Anchors are masked positions of the current step: once 2 is unmasked, 3 (0.8) waits."""
    def script(n, region):
        conf = [0.5, 0.5, 0.95, 0.5, 0.5, 0.5, 0.5, 0.5] if n == 0 else [0.5, 0.5, 0.5, 0.8, 0.5, 0.5, 0.5, 0.7]
        return peaked([2] * 8, conf)

    got = commits(ScriptedLM(script, 8), [5], "localleap", 8)
    assert got[:2] == [[2], [3]]


def test_eos_fill_of_finished_blocks():
    """Block 0 finishes holding end-of-text (token 1): blocks 1 and 2 become end-of-text without
    a forward (eos_fill="block", the default); with eos_fill="none" they are decoded."""
    lm = ScriptedLM(lambda n, region: peaked([2, 1, 3, 3, 4, 4], [0.99] * 6), 6)
    out = decodelab.generate(lm, [5], "localleap", max_new_tokens=6, ignore_eos=True, block_length=2)
    assert out.tokens == [2, 1, 1, 1, 1, 1] and out.stats.nfe == 1 and out.stats.unmasked == [6]
    out = decodelab.generate(lm, [5], "localleap", max_new_tokens=6, ignore_eos=True, block_length=2,
                             eos_fill="none")
    assert out.tokens == [2, 1, 3, 3, 4, 4] and out.stats.nfe == 3


def test_on_the_zoo_model():
    for block in (None, 8):
        acc, nfe = zoo_task_run("localleap", block)
        assert acc >= 0.75 and nfe < 8, (block, acc, nfe)


@pytest.mark.parametrize("block", [2, 8])
def test_caches_are_exact_when_every_block_takes_one_step(block):
    lm = tiny_lm("llama")
    kw = dict(max_new_tokens=24, ignore_eos=True, threshold=0.0, relaxed_threshold=0.0, block_length=block)
    want = decodelab.generate(lm, [5, 17, 300, 42], "localleap", **kw)
    assert want.stats.nfe == 24 // block
    for cache in ("prefix", "dual"):
        got = decodelab.generate(lm, [5, 17, 300, 42], "localleap", cache=cache, **kw)
        assert got.tokens == want.tokens and got.stats.forwarded_tokens <= want.stats.forwarded_tokens


def test_caches_forward_fewer_tokens():
    lm = tiny_lm("llama")
    fwd = {c: decodelab.generate(lm, [5, 17, 300, 42], "localleap", max_new_tokens=24, ignore_eos=True,
                                 block_length=8, threshold=1.0, relaxed_threshold=1.0, cache=c).stats.forwarded_tokens
           for c in ("none", "prefix", "dual")}
    assert fwd["dual"] < fwd["prefix"] < fwd["none"]


@pytest.mark.parametrize("kw, match", [
    (dict(relaxed_threshold=0.95), "relaxed_threshold \\(0.95\\) must not exceed threshold \\(0.9\\)"),
    (dict(threshold=1.5), "threshold must be a number in \\[0, 1\\]"),
    (dict(radius=-1), "radius"),
    (dict(eos_fill="token"), "eos_fill"),
    (dict(block_length=5), "block_length \\(5\\) must divide max_new_tokens \\(8\\)"),
    (dict(cache="prefix"), "needs a model with a KV cache"),
])
def test_bad_options_are_refused(kw, match):
    with pytest.raises(DecodeLabError, match=match):
        decodelab.generate(STATIC, [5], "localleap", max_new_tokens=8, **kw)
