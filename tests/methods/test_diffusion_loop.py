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


@pytest.fixture
def hooked():
    """Test-only diffusion methods for the loop's two optional hooks, removed afterwards."""
    from dataclasses import dataclass

    from decodelab.core import unmask

    @dataclass(frozen=True, kw_only=True)
    class _Fill(Options):
        eos_fill: str = "none"
        block_length: int | None = None

    class Top1:
        def select(self, view):
            return unmask.top_k(view.conf, 1)

    class Flip(Top1):  # proposes from negated logits: the model's least likely token
        def __init__(self):
            self.calls = []

        def propose_from(self, logits, masked, block, step):
            self.calls.append((block, step, int(masked.sum())))
            return -logits

    flips = []
    register("hooked_fill", family="diffusion", config=_Fill, lossless=None)(
        lambda req, config: diffusion.decode(req, Top1(), block_length=config.block_length, eos_fill=config.eos_fill))
    register("hooked_flip", family="diffusion", config=_Fill, lossless=None)(
        lambda req, config: diffusion.decode(req, flips.append(Flip()) or flips[-1], block_length=config.block_length))
    yield flips
    for name in ("hooked_fill", "hooked_flip"):
        _METHODS.pop(name, None)


def test_propose_from_changes_the_proposal_not_the_logprobs(hooked):
    """The hook's logits decide x0 and conf; log-probabilities stay the model's; it is called once
    per forward with the block index, the step within the block and the block's mask."""
    from methods.diffusion_helpers import ScriptedLM, peaked

    lm = ScriptedLM(lambda n, region: peaked([2, 3, 4, 5], [0.9, 0.8, 0.7, 0.6]), 4)
    out = decodelab.generate(lm, [5, 6], "hooked_flip", max_new_tokens=4, ignore_eos=True, logprobs=True,
                             block_length=2)
    assert 2 not in out.tokens and 3 not in out.tokens[:1]  # never the model's argmax
    assert hooked[0].calls == [(0, 0, 2), (0, 1, 1), (1, 0, 2), (1, 1, 1)]
    want = torch.log_softmax(peaked([2, 3, 4, 5], [0.9, 0.8, 0.7, 0.6]), -1)
    assert out.logprobs == pytest.approx([float(want[i, t]) for i, t in enumerate(out.tokens)], abs=1e-5)
    with pytest.raises(DecodeLabError, match="a policy that proposes from the model's logits"):
        class _Req:  # decode refuses draft verification with the hook before anything runs
            max_new_tokens, greedy, target = 4, True, lm
        diffusion.decode(_Req(), hooked[0], schedule=lambda s, b: [1] * s, drafts=2)


def test_eos_fill_block_and_token(hooked):
    """block: a finished block holding end-of-text (token 1) fills every later block without a
    forward; token: a committed end-of-text fills every masked position after it at once."""
    from methods.diffusion_helpers import ScriptedLM, commits, peaked

    lm = ScriptedLM(lambda n, region: peaked([2, 1, 3, 4, 5, 6], [0.6, 0.99, 0.7, 0.5, 0.5, 0.5]), 6)
    assert commits(lm, [7], "hooked_fill", 6, block_length=2) == [[1], [0], [2], [3], [4], [5]]
    st = decodelab.DecodeStats()
    chunks = list(decodelab.stream(lm, [7], "hooked_fill", max_new_tokens=6, ignore_eos=True, block_length=2,
                                   eos_fill="block", stats=st))
    assert [sorted(c.positions) for c in chunks] == [[1], [0], [2, 3, 4, 5]]
    assert [t for c in chunks for t in c] == [2, 1, 1, 1, 1, 1] and st.nfe == 2 and st.unmasked == [1, 5]
    assert commits(lm, [7], "hooked_fill", 6, eos_fill="token") == [[1, 2, 3, 4, 5], [0]]
    out = decodelab.generate(lm, [7], "hooked_fill", max_new_tokens=6, ignore_eos=True, eos_fill="token",
                             logprobs=True)
    assert out.tokens == [2, 1, 1, 1, 1, 1] and out.logprobs[2:] == [0.0] * 4
    with pytest.raises(DecodeLabError, match="eos_fill must be one of none, block, token"):
        decodelab.generate(lm, [7], "hooked_fill", max_new_tokens=6, eos_fill="all")
