"""Slow: every greedy-lossless method equals plain greedy (ids and length) on the bundled zoo code
pair, over HumanEval and held-out standard-library prompts, 128 new tokens. Picks up new methods
from the registry, like test_lossless_registry does on tiny random models."""
import pytest

import decodelab
from decodelab.bench import workloads
from decodelab.registry import all_methods

METHODS = sorted(name for name, m in all_methods().items()  # causal methods (diffusion: test_diffusion_registry)
                 if m.lossless in ("greedy", "sampling") and "greedy" in m.modes and name != "greedy"
                 and m.family != "diffusion")
VARIANTS = [(m, {}) for m in METHODS] + [("sps", dict(schedule="heuristic"))]


@pytest.fixture(scope="module")
def zoo_pair():
    return decodelab.load("zoo:code-target"), decodelab.load("zoo:code-draft")


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["humaneval", "code-heldout"])
@pytest.mark.parametrize("method,kw", VARIANTS)
def test_greedy_lossless_on_zoo_pair(zoo_pair, workload, method, kw):
    target, draft = zoo_pair
    for prompt in workloads.build(workload, target, limit=3).prompts:
        want = decodelab.generate(target, list(prompt), max_new_tokens=128, ignore_eos=True).tokens
        out = decodelab.generate(target, list(prompt), method, draft=draft if all_methods()[method].draft else None,
                                 max_new_tokens=128, ignore_eos=True, **kw)
        assert out.tokens == want and len(out.tokens) == 128
        assert out.stats.tau > 1.0
