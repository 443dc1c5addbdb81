"""llada equals the published LLaDA algorithm step for step (the canvas after every step), on the
zoo's masked diffusion LMs and tiny random ones, over steps, blocks, temperature and remasking;
and refuses settings the algorithm cannot run."""
import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.zoo import tasks
from methods.diffusion_helpers import canvases, llada_reference, tiny_dlm  # noqa: F401

ZOO = ["tasks-mdlm", "tasks-mdlm-llama"]  # an encoder and a decoder run bidirectionally
SETTINGS = [  # (steps, block_length, temperature, remasking)
    (24, 24, 0.0, "low_confidence"),  # one position per step: the reference of the family
    (12, 24, 0.0, "low_confidence"),
    (6, 8, 0.0, "low_confidence"),  # 3 blocks of 2 steps, 4 positions a step
    (9, 8, 0.0, "low_confidence"),  # 3 positions per step, uneven inside no block
    (24, 8, 0.7, "low_confidence"),  # Gumbel-max sampling
    (12, 12, 0.0, "random"),
]


@pytest.fixture(scope="module", params=ZOO)
def zoo_dlm(request):
    return decodelab.load(f"zoo:{request.param}")


def _task_prompts(lm, n=2):
    exs = [e for t in ("sort", "reverse", "insert_at") for e in tasks.examples(t, "test", n, seed=1)]
    return [lm.tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in exs]


def _run_both(lm, prompt, steps, block, temperature, remasking, G=24, seed=11):
    kw = dict(steps=steps, block_length=block, remasking=remasking)
    if temperature > 0:
        kw.update(do_sample=True, temperature=temperature, seed=seed)
    elif remasking == "random":
        kw.update(seed=seed)
    ours = canvases(lm, prompt, "llada", G, **kw)
    gen = torch.Generator().manual_seed(seed)
    ref = llada_reference(lm.fresh(), prompt, G, steps, block, temperature, remasking, gen)
    return ours, ref


@pytest.mark.parametrize("steps,block,temperature,remasking", SETTINGS)
def test_equals_published_llada_on_zoo_models(zoo_dlm, steps, block, temperature, remasking):
    for prompt in _task_prompts(zoo_dlm):
        ours, ref = _run_both(zoo_dlm, prompt, steps, block, temperature, remasking)
        assert len(ours) == steps and ours == ref


def test_equals_published_llada_on_code_mdlm():
    lm = decodelab.load("zoo:code-mdlm")
    prompt = lm.tokenizer("def fib(n):\n    if n < 2:\n", add_special_tokens=False)["input_ids"]
    for steps, block in ((32, 32), (16, 16), (8, 8)):
        ours, ref = _run_both(lm, prompt, steps, block, 0.0, "low_confidence", G=32)
        assert ours == ref


@pytest.mark.parametrize("steps,block,temperature,remasking", SETTINGS)
def test_equals_published_llada_on_tiny_models(tiny_dlm, steps, block, temperature, remasking):
    for prompt in ([5, 17, 300, 42], [7]):
        ours, ref = _run_both(tiny_dlm, prompt, steps, block, temperature, remasking)
        assert ours == ref


def test_a_difference_in_the_rule_is_caught(tiny_dlm):
    """The comparison can fail: the reference with the opposite remasking order differs."""
    prompt = [5, 17, 300, 42]
    ours, _ = _run_both(tiny_dlm, prompt, 24, 24, 0.0, "low_confidence")
    other = llada_reference(tiny_dlm.fresh(), prompt, 24, 24, 24, 0.0, "random", torch.Generator().manual_seed(0))
    assert ours != other


def test_one_position_per_step_and_the_end_of_text_cut():
    lm = decodelab.load("zoo:tasks-mdlm")
    prompt = "reverse: Ann, Bob, Cid, Dan =>"
    full = decodelab.generate(lm, prompt, "llada", max_new_tokens=24, ignore_eos=True)
    assert full.stats.nfe == 24 and full.stats.unmasked == [1] * 24 and len(full.tokens) == 24
    out = decodelab.generate(lm, prompt, "llada", max_new_tokens=24)
    eos = lm.tokenizer.eos_token_id
    assert out.tokens == full.tokens[: full.tokens.index(eos) + 1]  # cut just after the first end-of-text
    assert out.text == " Dan, Cid, Bob, Ann\n<|endoftext|>"
    assert out.stats.nfe <= 24


def test_sampling_is_seeded_and_differs_from_greedy():
    lm = decodelab.load("zoo:code-mdlm")
    prompt = "import os\n"
    a, b = (decodelab.generate(lm, prompt, "llada", max_new_tokens=16, ignore_eos=True, do_sample=True,
                               temperature=1.5, seed=3).tokens for _ in range(2))
    greedy = decodelab.generate(lm, prompt, "llada", max_new_tokens=16, ignore_eos=True).tokens
    c = decodelab.generate(lm, prompt, "llada", max_new_tokens=16, ignore_eos=True, do_sample=True,
                           temperature=1.5, seed=4).tokens
    assert a == b and (a != greedy or c != greedy) and len(a) == 16


@pytest.mark.parametrize("kw, match", [
    (dict(block_length=7), "block_length \\(7\\) must divide max_new_tokens \\(24\\)"),
    (dict(block_length=48), "must divide"),
    (dict(steps=5, block_length=8), "multiple of the number of blocks \\(3\\)"),
    (dict(steps=25), "at most max_new_tokens"),
    (dict(steps=0), "steps must be an integer in \\[1, 8192\\] or None"),
    (dict(remasking="high"), "remasking must be one of"),
])
def test_bad_settings_are_refused_before_anything_runs(kw, match):
    lm = decodelab.load("zoo:tasks-mdlm")
    before = lm.counter.forwards
    with pytest.raises(DecodeLabError, match=match):
        decodelab.stream(lm, [5, 6], "llada", max_new_tokens=24, **kw)
    assert lm.counter.forwards == before
