"""Every registered method that claims sampling losslessness (and `sample` itself) draws its output
exactly from the target's processed distribution: on a ToyLM pair with exact tables, the
empirical distribution of the first 3 generated tokens converges to the exact one (TV shrinks with
N and ends under twice the i.i.d. expectation), at a temperature and top-k applied to p and q
alike. New methods are picked up from the registry automatically, like the greedy-equality test."""
import pytest

import decodelab
from decodelab.registry import all_methods
from methods.spec_helpers import check_converges, one_thread  # noqa: F401

from .test_lossless_registry import OPTIONS

SAMPLING_LOSSLESS = sorted(name for name, m in all_methods().items()
                           if m.lossless == "sampling" and "sample" in m.modes and m.family != "diffusion")
PROMPT = (1, 2, 1, 2, 1)  # repetitive, so the model-free drafters find something to propose
SETTINGS = dict(temperature=0.8, top_k=5)


@pytest.mark.parametrize("method", SAMPLING_LOSSLESS)
def test_sampling_lossless_methods_match_the_target_distribution(method, toy_pair, one_thread):
    target, draft = toy_pair
    spec = all_methods()[method]
    kw = dict(OPTIONS.get(method, {}), **SETTINGS)
    # one State over the runs: methods that learn (Token Recycling, ADED) draft from what they saw,
    # so their guesses are accepted (every run is still an exact draw from p)
    check_converges(method, target, draft if spec.draft else None, sizes=(150, 1200), prompt=PROMPT,
                    exact_draft=draft, state=decodelab.State(), **kw)
    if spec.family == "speculative":  # the accept path was exercised, not only rejections
        state = decodelab.State()
        committed = [c for i in range(40) for c in decodelab.generate(
            target, list(PROMPT), method, draft=draft if spec.draft else None, max_new_tokens=6, do_sample=True,
            seed=i, ignore_eos=True, state=state, **kw).stats.committed]
        assert max(committed) > 1, method
