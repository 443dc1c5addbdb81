"""The whole sampler chain (penalties, DRY, top-n-sigma, typical-p, XTC, temperature) under every
speculative method: the output is distributed exactly as plain sampling with the same chain (the
verifier gives each draft node its own context; XTC is its mixture), on a ToyLM pair whose exact
distribution is enumerated with each prefix's own context. And the methods that cannot apply the
context processors per token refuse them up front."""
import pytest

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.registry import all_methods
from methods.spec_helpers import check_converges, one_thread  # noqa: F401

from .test_lossless_registry import OPTIONS

CHAIN = dict(temperature=0.9, repetition_penalty=1.6, presence_penalty=0.2, frequency_penalty=0.1, repeat_last_n=4,
             dry_multiplier=0.7, dry_allowed_length=2, top_n_sigma=2.5, typical_p=0.97, xtc_probability=0.5,
             xtc_threshold=0.25)
PROMPT = (1, 2, 1, 2, 1)  # a repeat, so DRY and the penalties act from the first token
# plain sampling, a draft-model chain (q with each prefix's context) and a model-free tree (q = None)
# in the default run; every other speculative method in the slow run
FAST = ("sample", "sps", "token_recycling")
EXACT = [m if m in FAST else pytest.param(m, marks=pytest.mark.slow)
         for m in ["sample"] + sorted(n for n, s in all_methods().items()
                                      if s.family == "speculative" and s.lossless == "sampling")]


@pytest.mark.parametrize("method", EXACT)
def test_speculative_sampling_stays_exact_with_the_whole_chain(method, toy_pair, one_thread):
    target, draft = toy_pair
    spec = all_methods()[method]
    check_converges(method, target, draft if spec.draft else None, sizes=(150, 1200), prompt=PROMPT,
                    exact_draft=draft, state=decodelab.State(), **OPTIONS.get(method, {}), **CHAIN)


def test_the_chain_changes_the_distribution(toy_pair):
    """The check above is not vacuous: with the chain the distribution differs from without it."""
    from decodelab.core.sampling import SamplingConfig
    from methods.spec_helpers import exact_dist, tv

    target, _ = toy_pair
    plain = exact_dist(target, list(PROMPT), SamplingConfig(do_sample=True, temperature=0.9))
    chained = exact_dist(target, list(PROMPT), SamplingConfig(do_sample=True, **CHAIN))
    assert tv(plain, chained) > 0.1


@pytest.mark.parametrize("method", sorted(n for n, m in all_methods().items()
                                          if not m.history and "sample" in m.modes and m.family != "diffusion"))
@pytest.mark.parametrize("option", [dict(repetition_penalty=1.3), dict(dry_multiplier=0.8)])
def test_methods_without_per_token_context_refuse_the_context_processors(method, option, tiny_dirs):
    target = decodelab.load(tiny_dirs["llama"][0])
    needs = {"astar": {"reward": "keywords:return"}}.get(method, {})  # options the method cannot run without
    with pytest.raises(DecodeLabError, match="context"):
        decodelab.generate(target, [3, 4, 5], method, do_sample=True, max_new_tokens=4, **needs, **option)
