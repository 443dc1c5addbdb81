"""sps with a draft far from the target: still exact, and it rejects more. (Every sampling-lossless
method's distribution test is registry-wide: test_sampling_registry.py.)"""
from methods.spec_helpers import empirical_dist, exact_dist, tv

import decodelab
from decodelab.core.sampling import SamplingConfig

PROMPT = [1, 2]


def exact_distribution(lm, cfg: SamplingConfig) -> dict[tuple, float]:
    return exact_dist(lm, PROMPT, cfg, n=3)


def empirical(target, draft, n: int, seed: int, **kw) -> dict[tuple, float]:
    """First 3 tokens of n sps runs (seeds seed * 100003 + i)."""
    return empirical_dist("sps", target, draft, PROMPT, n, seed0=seed * 100003, gen=3, **kw)


def mean_tau(target, draft, n: int) -> float:
    taus = []
    for i in range(n):
        stats = decodelab.DecodeStats()
        for _ in decodelab.stream(target, PROMPT, "sps", draft=draft, max_new_tokens=4, do_sample=True, seed=i,
                                  gamma=3, stats=stats):
            pass
        taus.append(stats.tau)
    return sum(taus) / n


def test_sps_draft_far_from_target_is_still_exact_and_rejects_more(toy_pair):
    target, _ = toy_pair
    from decodelab.models import ToyLM

    bad = ToyLM(-target.table)  # the draft prefers what the target avoids
    exact = exact_distribution(target, SamplingConfig(do_sample=True))
    assert tv(empirical(target, bad, 2000, seed=4, gamma=2), exact) < 0.15
    assert mean_tau(target, bad, 100) < 1.5 < mean_tau(target, target, 100)
