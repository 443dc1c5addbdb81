"""Registry-wide tests of the diffusion family: every registered diffusion method gets them without
writing its own (as test_lossless_registry.py does for the causal families).

- It fills every mask within the budget: G positions unmasked in at most G forwards, each exactly
  once, and only masked ones (the stream's positions reassemble to the output).
- Blocks are decoded left to right (methods with a block_length option).
- Stops: with end-of-text as a stop the output is the no-stop output cut just after the first
  end-of-text (greedy), and a stop string ends it where the text completes it.
- Log-probabilities line up with the tokens; two interleaved streams equal each alone.
- Every method that claims greedy losslessness (lossless="greedy", e.g. freedave) equals llada
  one position per step exactly on the zoo models and tiny random ones, and the check can fail.
"""
import pytest
import torch

import decodelab
from decodelab.registry import all_methods
from decodelab.zoo import tasks
from methods.diffusion_helpers import tiny_dlm  # noqa: F401
from methods.stream_helpers import interleave

DIFFUSION = sorted(n for n, m in all_methods().items() if m.family == "diffusion")
LOSSLESS = sorted(n for n in DIFFUSION if all_methods()[n].lossless == "greedy")
BLOCKED = sorted(n for n in DIFFUSION if "block_length" in {f["name"] for f in all_methods()[n].describe()["options"]})
# per-method options a generic test needs (a block_length that some option combination requires)
OPTIONS: dict[str, dict] = {"eoser": {"schedule": "even"}}
# options on the tiny random models, which no bundled trained part was made for (learn2pd finds its
# filter by the model's zoo name)
TINY: dict[str, dict] = {"learn2pd": {"filter": "tasks-mdlm-learn2pd"}}
G = 24


@pytest.fixture(scope="module")
def zoo_lm():
    return decodelab.load("zoo:tasks-mdlm")


def _prompt(lm, task="reverse", i=0):
    ex = tasks.examples(task, "test", i + 1, seed=4)[i]
    return lm.tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]


def _reassemble(lm, chunks):
    region = [lm.mask_id] * G
    for c in chunks:
        for p, t in zip(c.positions, c.tokens):
            assert 0 <= p < G and region[p] == lm.mask_id, "unmasked twice, or outside the canvas"
            region[p] = t
    return region


@pytest.mark.parametrize("method", DIFFUSION)
def test_fills_every_mask_once_within_the_budget(method, tiny_dlm, zoo_lm):
    for lm, prompt, kw in ((tiny_dlm, [5, 17, 300, 42], TINY.get(method, {})), (zoo_lm, _prompt(zoo_lm), {})):
        st = decodelab.DecodeStats()
        chunks = list(decodelab.stream(lm, prompt, method, max_new_tokens=G, ignore_eos=True, stats=st, **kw))
        region = _reassemble(lm, chunks)
        assert lm.mask_id not in region and [t for c in chunks for t in c] == region
        assert sum(st.unmasked) == G and len(st.unmasked) == st.nfe <= G and st.new_tokens == G
        assert all(len(c.positions) >= 1 for c in chunks)


@pytest.mark.parametrize("method", BLOCKED)
def test_blocks_are_decoded_left_to_right(method, zoo_lm):
    chunks = list(decodelab.stream(zoo_lm, _prompt(zoo_lm, "sort"), method, max_new_tokens=G, ignore_eos=True,
                                   block_length=8, **{k: v for k, v in OPTIONS.get(method, {}).items()}))
    blocks = [p // 8 for c in chunks for p in c.positions]
    assert blocks == sorted(blocks) and sorted(p for c in chunks for p in c.positions) == list(range(G))


@pytest.mark.parametrize("method", DIFFUSION)
def test_stops(method, zoo_lm):
    eos = zoo_lm.tokenizer.eos_token_id
    for task in ("copy", "remove_at"):
        prompt = _prompt(zoo_lm, task)
        free = decodelab.generate(zoo_lm, prompt, method, max_new_tokens=G, ignore_eos=True, **OPTIONS.get(method, {}))
        out = decodelab.generate(zoo_lm, prompt, method, max_new_tokens=G, **OPTIONS.get(method, {}))
        assert eos in free.tokens and out.tokens == free.tokens[: free.tokens.index(eos) + 1]
        assert out.stats.nfe <= free.stats.nfe
        text = zoo_lm.tokenizer.decode(free.tokens)
        stop = text[3:6]  # inside the answer
        cut = decodelab.generate(zoo_lm, prompt, method, max_new_tokens=G, ignore_eos=True, stop=stop,
                                 **OPTIONS.get(method, {}))
        assert stop in cut.text and stop not in zoo_lm.tokenizer.decode(cut.tokens[:-1])
        assert free.tokens[: len(cut.tokens)] == cut.tokens


@pytest.mark.parametrize("method", DIFFUSION)
def test_logprobs_line_up(method, zoo_lm):
    out = decodelab.generate(zoo_lm, _prompt(zoo_lm), method, max_new_tokens=G, ignore_eos=True, logprobs=True)
    assert len(out.logprobs) == len(out.tokens) == G
    assert all(lp <= 0 for lp in out.logprobs) and sum(out.logprobs) > -G * 20


@pytest.mark.parametrize("method", DIFFUSION)
def test_trace_steps_make_up_the_output(method, zoo_lm):
    out = decodelab.generate(zoo_lm, _prompt(zoo_lm), method, max_new_tokens=G, trace=True)
    assert [t for s in out.trace for t in s.tokens] == out.tokens and len(out.trace) == len(out.stats.committed)


@pytest.mark.parametrize("method", DIFFUSION)
def test_interleaved_streams_are_independent(method, zoo_lm):
    prompts = [_prompt(zoo_lm, "copy"), _prompt(zoo_lm, "insert_at")]
    kw = dict(max_new_tokens=G, ignore_eos=True, **OPTIONS.get(method, {}))
    alone = [decodelab.generate(zoo_lm, p, method, **kw).tokens for p in prompts]
    streams = [decodelab.stream(zoo_lm, p, method, **kw) for p in prompts]
    assert interleave(streams) == alone


def _one_per_step(lm, prompt, **kw):
    return decodelab.generate(lm, prompt, "llada", max_new_tokens=G, ignore_eos=True, **kw)


def _check_lossless(method, cases):
    for lm, prompt in cases:
        for block in (None, 8):
            want = _one_per_step(lm, prompt, block_length=block)
            got = decodelab.generate(lm, prompt, method, max_new_tokens=G, ignore_eos=True, block_length=block)
            assert got.tokens == want.tokens, (method, prompt, block)
            assert got.stats.nfe <= want.stats.nfe


@pytest.mark.parametrize("method", LOSSLESS)
def test_greedy_lossless_methods_equal_one_position_per_step_on_tiny_models(method, tiny_dlm):
    _check_lossless(method, [(tiny_dlm, [5, 17, 300, 42]), (tiny_dlm, [9])])


@pytest.mark.parametrize("method", LOSSLESS)
def test_greedy_lossless_methods_equal_one_position_per_step_on_zoo_models(method):
    zoo = [decodelab.load(f"zoo:{n}") for n in ("tasks-mdlm", "code-mdlm")]
    cases = [(zoo[0], _prompt(zoo[0], t)) for t in tasks.LIST_TASKS]
    cases += [(zoo[1], zoo[1].tokenizer("def add(a, b):\n", add_special_tokens=False)["input_ids"])]
    _check_lossless(method, cases)


def test_the_equality_check_can_fail(zoo_lm):
    """Unverified parallel decoding (llada at 4 positions per step) differs from one position per
    step on some prompt of the same set: the lossless test above has teeth."""
    prompts = [_prompt(zoo_lm, t, i) for t in tasks.LIST_TASKS for i in range(2)]
    assert any(decodelab.generate(zoo_lm, p, "llada", max_new_tokens=G, ignore_eos=True, steps=6).tokens
               != _one_per_step(zoo_lm, p).tokens for p in prompts)
