"""Slow: every greedy-lossless method equals plain greedy (ids and length) on the bundled zoo code
pair, over HumanEval and held-out standard-library prompts, 128 new tokens. Picks up new methods
from the registry, like test_lossless_registry does on tiny random models.

Each method runs with its defaults and at a fixed budget (the bench's rule: FIXED target tokens per
forward). The defaults may rightly not draft: the auto sizes rest where drafting does not pay on the
host's measured costs (sps, rsd_c and rsd_s on zoo:code-target on torch), so there the output is
greedy's without a drafted path. The fixed budget makes every method draft, and its steps must
commit more than one token on average on every prompt, so that exactness is checked on drafted,
verified paths (as with sps's heuristic schedule, and the defaults of a method without a fixed
budget)."""
import pytest

import decodelab
from decodelab.bench import workloads
from decodelab.registry import all_methods

METHODS = sorted(name for name, m in all_methods().items()  # causal methods (diffusion: test_diffusion_registry)
                 if m.lossless in ("greedy", "sampling") and "greedy" in m.modes and name != "greedy"
                 and m.family != "diffusion")
FIXED = 4  # target tokens per forward, root included
VARIANTS = [(m, {}) for m in METHODS] + [("sps", dict(schedule="heuristic"))] + \
    [(m, all_methods()[m].budget_options(FIXED, {})) for m in METHODS if all_methods()[m].budget is not None]


@pytest.fixture(scope="module")
def zoo_pair():
    return decodelab.load("zoo:code-target"), decodelab.load("zoo:code-draft")


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["humaneval", "code-heldout"])
@pytest.mark.parametrize("method,kw", VARIANTS, ids=lambda x: x if isinstance(x, str) else
                         ",".join(f"{k}={v}" for k, v in x.items()) or "defaults")
def test_greedy_lossless_on_zoo_pair(zoo_pair, workload, method, kw):
    target, draft = zoo_pair
    taus = []
    for prompt in workloads.build(workload, target, limit=3).prompts:
        want = decodelab.generate(target, list(prompt), max_new_tokens=128, ignore_eos=True).tokens
        out = decodelab.generate(target, list(prompt), method, draft=draft if all_methods()[method].draft else None,
                                 max_new_tokens=128, ignore_eos=True, **kw)
        assert out.tokens == want and len(out.tokens) == 128
        taus.append(out.stats.tau)
    if kw or all_methods()[method].budget is None:  # a fixed size: drafted and accepted
        assert min(taus) > 1.0, taus
