"""sps sampling preserves the target distribution: on ToyLM pairs with exact tables, the empirical
distribution of the first 3 generated tokens approaches the exact one (seeded, so never flaky)."""
from methods.spec_helpers import empirical_dist, exact_dist, tv

import decodelab
from decodelab.core.sampling import SamplingConfig

PROMPT = [1, 2]


def exact_distribution(lm, cfg: SamplingConfig) -> dict[tuple, float]:
    return exact_dist(lm, PROMPT, cfg, n=3)


def empirical(target, draft, n: int, seed: int, **kw) -> dict[tuple, float]:
    """First 3 tokens of n sps runs (seeds seed * 100003 + i)."""
    return empirical_dist("sps", target, draft, PROMPT, n, seed0=seed * 100003, gen=3, **kw)


def test_sps_sampling_matches_target_distribution(toy_pair):
    target, draft = toy_pair
    exact = exact_distribution(target, SamplingConfig(do_sample=True))
    small = tv(empirical(target, draft, 300, seed=1, gamma=2), exact)
    large = tv(empirical(target, draft, 4000, seed=2, gamma=2), exact)
    # 216 outcomes: with N samples the TV of a faithful sampler is about 0.5*sqrt(216/(pi/2 N))
    assert large < 0.13, large
    assert large < small * 0.6, (small, large)


def test_sps_sampling_with_processed_p_and_q(toy_pair):
    target, draft = toy_pair
    cfg = dict(temperature=0.7, top_k=4)
    exact = exact_distribution(target, SamplingConfig(do_sample=True, **cfg))
    large = tv(empirical(target, draft, 4000, seed=3, gamma=3, **cfg), exact)
    assert large < 0.13, large


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
