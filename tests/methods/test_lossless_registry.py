"""Every registered method that claims greedy losslessness equals plain greedy exactly (ids and
length) on tiny random models of several architectures. New methods are picked up automatically."""
import pytest

import decodelab
from decodelab.registry import all_methods

# Per-method options the generic test needs (none so far): name -> kwargs.
OPTIONS: dict[str, dict] = {"specdecpp": {"head": "none"}}  # no trained head fits the tiny drafts

GREEDY_LOSSLESS = sorted(name for name, m in all_methods().items()
                         if m.lossless in ("greedy", "sampling") and "greedy" in m.modes and name != "greedy")


@pytest.mark.parametrize("method", GREEDY_LOSSLESS)
def test_greedy_lossless_methods_equal_greedy(method, tiny_pair):
    arch, target, draft = tiny_pair
    spec = all_methods()[method]
    base = [3, 17, 5, 9]
    first = decodelab.generate(target, base, max_new_tokens=24).tokens
    # a prompt that repeats the model's own continuation, so that drafts actually get accepted
    for prompt in (base, base + first + base):
        want = decodelab.generate(target, prompt, max_new_tokens=48)
        drafts = [draft, target] if spec.draft else [None]
        for d in drafts:
            got = decodelab.generate(target, prompt, method, draft=d, max_new_tokens=48, **OPTIONS.get(method, {}))
            assert got.tokens == want.tokens, (method, arch, prompt)
            assert got.stats.new_tokens == len(want.tokens)
            assert got.stats.target_forwards <= want.stats.target_forwards


def test_self_drafting_sps_accepts_everything(tiny_pair):
    _, target, _ = tiny_pair
    out = decodelab.generate(target, [3, 17, 5, 9], "sps", draft=target, max_new_tokens=30, gamma=4)
    assert out.stats.committed[:-1] == [5] * 5 and out.stats.tau > 4.5
