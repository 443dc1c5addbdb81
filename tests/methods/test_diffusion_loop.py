"""The diffusion loop's own contract: policies must pick masked positions of the block, each step
yields what it unmasked (and the decoded prefix), log-probabilities are those of the logits a
token was chosen from, counts survive an early close, and the canvas must fit the context."""
import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.loops import diffusion
from decodelab.options import Options
from decodelab.registry import _METHODS, register
from methods.diffusion_helpers import tiny_lm


@pytest.fixture
def planted():
    """Test-only diffusion methods with broken policies, removed afterwards."""
    from dataclasses import dataclass

    @dataclass(frozen=True, kw_only=True)
    class _No(Options):
        pass

    class Again:  # picks position 0 every step, masked or not
        def select(self, view):
            return torch.tensor([0])

    class Nothing:
        def select(self, view):
            return torch.tensor([], dtype=torch.long)

    for name, policy in (("planted_again", Again), ("planted_nothing", Nothing)):
        register(name, family="diffusion", config=_No, lossless=None)(
            lambda req, config, p=policy: diffusion.decode(req, p()))
    yield
    for name in ("planted_again", "planted_nothing"):
        _METHODS.pop(name, None)


def test_a_policy_must_pick_masked_positions(planted):
    lm = tiny_lm("bert")
    for name in ("planted_again", "planted_nothing"):
        with pytest.raises(RuntimeError, match="must pick at least one masked position"):
            decodelab.generate(lm, [5, 6], name, max_new_tokens=4, ignore_eos=True)


def test_each_step_yields_its_unmasking_and_the_decoded_prefix():
    lm = tiny_lm("llama")
    region, done = [lm.mask_id] * 12, 0
    for chunk in decodelab.stream(lm, [5, 17, 300], "llada", max_new_tokens=12, ignore_eos=True, steps=4):
        assert len(chunk.positions) == len(chunk.tokens) == 3 and isinstance(chunk, list)
        for p, t in zip(chunk.positions, chunk.tokens):
            region[p] = t
        front = next((i for i, t in enumerate(region) if t == lm.mask_id), 12)
        assert list(chunk) == region[done:front]  # what became final in reading order
        done = front


def test_logprobs_are_those_of_the_step_that_chose_the_token():
    lm = tiny_lm("bert")
    prompt, G = [5, 17, 300], 8
    out = decodelab.generate(lm, prompt, "llada", max_new_tokens=G, ignore_eos=True, logprobs=True)
    region, want = [lm.mask_id] * G, {}
    for chunk in decodelab.stream(lm, prompt, "llada", max_new_tokens=G, ignore_eos=True):
        logits = lm.fresh().logits(torch.tensor(prompt + region), torch.arange(3, 3 + G))
        for p, t in zip(chunk.positions, chunk.tokens):
            want[p] = float(torch.log_softmax(logits[p], -1)[t])
            region[p] = t
    assert out.logprobs == pytest.approx([want[i] for i in range(G)], abs=1e-5)


def test_counts_survive_an_early_close():
    lm = tiny_lm("bert")
    st = decodelab.DecodeStats()
    it = decodelab.stream(lm, [5, 6], "llada", max_new_tokens=8, ignore_eos=True, stats=st)
    next(it), next(it), next(it)
    it.close()
    assert st.nfe == 3 and st.unmasked == [1, 1, 1] and st.forwarded_tokens == 3 * 10


def test_the_canvas_must_fit_the_context():
    lm = tiny_lm("bert")  # 64 positions
    with pytest.raises(DecodeLabError, match="exceeds the model's context of 64 tokens"):
        decodelab.generate(lm, [5] * 50, "llada", max_new_tokens=16)
