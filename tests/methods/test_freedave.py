"""freedave reproduces llada's low-confidence decoding exactly (every canvas it reaches is one
llada reaches, in order, and the output is the same), with fewer forwards; drafts=1 is llada."""
import pytest

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.zoo import tasks
from methods.diffusion_helpers import canvases, tiny_dlm  # noqa: F401


def _prompts(lm, n=1):
    exs = [e for t in ("copy", "sort", "replace_random") for e in tasks.examples(t, "test", n, seed=2)]
    return [lm.tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in exs]


def _check_reproduces(lm, prompt, G=24, **kw):
    base = {k: v for k, v in kw.items() if k in ("steps", "block_length")}
    ref = canvases(lm, prompt, "llada", G, **base)
    got = canvases(lm, prompt, "freedave", G, **kw)
    it = iter(ref)
    assert all(any(c == r for r in it) for c in got), "a canvas llada never reaches, or out of order"
    assert got[-1] == ref[-1]
    return len(got), len(ref)


@pytest.mark.parametrize("name", ["tasks-mdlm", "tasks-mdlm-llama"])
@pytest.mark.parametrize("kw", [dict(), dict(drafts=2), dict(drafts=8), dict(block_length=8),
                                dict(steps=12, drafts=3), dict(steps=12, block_length=12)])
def test_reproduces_llada_on_zoo_models(name, kw):
    lm = decodelab.load(f"zoo:{name}")
    for prompt in _prompts(lm):
        _check_reproduces(lm, prompt, **kw)
    out = decodelab.generate(lm, _prompts(lm)[0], "freedave", max_new_tokens=24, ignore_eos=True, **kw)
    ref = decodelab.generate(lm, _prompts(lm)[0], "llada", max_new_tokens=24, ignore_eos=True,
                             **{k: v for k, v in kw.items() if k != "drafts"})
    assert out.tokens == ref.tokens and out.stats.nfe < ref.stats.nfe


@pytest.mark.parametrize("kw", [dict(), dict(drafts=6, block_length=6)])
def test_reproduces_llada_on_tiny_models(tiny_dlm, kw):
    for prompt in ([5, 17, 300, 42], [9, 9, 9]):
        _check_reproduces(tiny_dlm, prompt, **kw)


def test_fewer_forwards_more_tokens_each():
    lm = decodelab.load("zoo:tasks-mdlm")
    nfe, ref_nfe = 0, 0
    for prompt in _prompts(lm, 3):
        out = decodelab.generate(lm, prompt, "freedave", max_new_tokens=24, ignore_eos=True)
        nfe += out.stats.nfe
        ref_nfe += 24
        assert sum(out.stats.unmasked) == 24 and max(out.stats.unmasked) <= 4  # K = 4 steps per forward at most
        # a verification forward scores up to K canvases of prompt + 24 tokens
        assert out.stats.forwarded_tokens <= out.stats.nfe * 4 * (len(prompt) + 24)
    assert nfe < ref_nfe / 1.5, (nfe, ref_nfe)


def test_one_draft_is_llada():
    lm = decodelab.load("zoo:tasks-mdlm")
    prompt = _prompts(lm)[1]
    a = decodelab.generate(lm, prompt, "freedave", max_new_tokens=24, ignore_eos=True, drafts=1)
    b = decodelab.generate(lm, prompt, "llada", max_new_tokens=24, ignore_eos=True)
    assert a.tokens == b.tokens and a.stats.nfe == b.stats.nfe == 24 and a.stats.forwarded_tokens == b.stats.forwarded_tokens


def test_greedy_only():
    lm = decodelab.load("zoo:tasks-mdlm")
    with pytest.raises(DecodeLabError, match="does not support sampling"):
        decodelab.generate(lm, [5, 6], "freedave", max_new_tokens=8, do_sample=True)
    with pytest.raises(DecodeLabError, match="drafts must be an integer in \\[1, 64\\]"):
        decodelab.generate(lm, [5, 6], "freedave", max_new_tokens=8, drafts=0)
