"""eoser: the ascending schedule (2^i positions at step i), end-of-text confidences scaled by the
paper's gamma at every step (checked against a fresh forward), and its refusals."""
import pytest
import torch

import decodelab
from decodelab.core import unmask
from decodelab.core.sampling import SamplingConfig
from decodelab.errors import DecodeLabError


@pytest.fixture(scope="module")
def lm():
    return decodelab.load("zoo:tasks-mdlm")


PROMPT = "reverse: Ann, Bob, Cid, Dan =>"


def _replay(lm, G, gamma, **kw):
    """Every step unmasks the top-k of conf * (gamma(i, S) at end-of-text proposals)."""
    ids = lm.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    region, eos = [lm.mask_id] * G, lm.tokenizer.eos_token_id
    chunks = list(decodelab.stream(lm, ids, "eoser", max_new_tokens=G, ignore_eos=True, **kw))
    for i, chunk in enumerate(chunks):
        logits = lm.fresh().logits(torch.tensor(ids + region), torch.arange(len(ids), len(ids) + G))
        x0, conf = unmask.propose(logits, SamplingConfig(), None, lm.mask_id)
        score = torch.where(x0 == eos, conf * gamma(i, len(chunks)), conf)
        score = score.masked_fill(torch.tensor(region) != lm.mask_id, -float("inf"))
        assert chunk.positions == unmask.top_k(score, len(chunk.positions)).tolist()
        for p, t in zip(chunk.positions, chunk.tokens):
            region[p] = t
    return chunks, region


def test_ascending_schedule_and_gamma(lm):
    chunks, region = _replay(lm, 24, lambda i, s: 0.01 + 0.99 * (2 ** (i + 1) - 1) / 2 ** s)
    assert [len(c.positions) for c in chunks] == [1, 2, 4, 17]
    assert lm.tokenizer.decode(region).startswith(" Dan, Cid, Bob, Ann\n")


def test_even_schedule_and_linear_gamma(lm):
    chunks, _ = _replay(lm, 24, lambda i, s: 0.4 + 0.6 * i / (s - 1), schedule="even", steps=12)
    assert [len(c.positions) for c in chunks] == [2] * 12


def test_rejection_holds_end_of_text_back(lm):
    """llada unmasks the confident end-of-text filler first on this model; eoser starts with the answer."""
    ids = lm.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    eos = lm.tokenizer.eos_token_id
    first = lambda method, **kw: next(iter(decodelab.stream(lm, ids, method, max_new_tokens=24, ignore_eos=True,
                                                             **kw))).tokens
    assert first("llada") == [eos]
    assert eos not in first("eoser", schedule="even")


def test_default_steps_are_floor_log2(lm):
    out = decodelab.generate(lm, PROMPT, "eoser", max_new_tokens=16, ignore_eos=True)
    assert out.stats.nfe == 4 and out.stats.unmasked == [1, 2, 4, 9]


@pytest.mark.parametrize("kw, match", [
    (dict(steps=6), "at most floor\\(log2\\(24\\)\\) \\+ 1 = 5 steps"),
    (dict(block_length=8), "block_length goes with schedule='even'"),
    (dict(gamma_min=0.0), "gamma_min must be a number in \\(0, 1\\]"),
])
def test_refusals(lm, kw, match):
    with pytest.raises(DecodeLabError, match=match):
        decodelab.generate(lm, [5, 6], "eoser", max_new_tokens=24, **kw)
