"""sps sampling preserves the target distribution: on ToyLM pairs with exact tables, the empirical
distribution of the first 3 generated tokens approaches the exact one (seeded, so never flaky)."""
import itertools


import decodelab
from decodelab.core.sampling import SamplingConfig, probs_from_logits

PROMPT = [1, 2]


def exact_distribution(lm, cfg: SamplingConfig, length: int = 3) -> dict[tuple, float]:
    out = {}
    for seq in itertools.product(range(lm.vocab_size), repeat=length):
        prob, ctx = 1.0, list(PROMPT)
        for t in seq:
            prob *= float(probs_from_logits(lm.next_logits(ctx), cfg)[t])
            ctx.append(t)
        out[seq] = prob
    return out


def empirical(target, draft, n: int, seed: int, **kw) -> dict[tuple, float]:
    counts: dict[tuple, int] = {}
    for i in range(n):
        toks = decodelab.generate(target, PROMPT, "sps", draft=draft, max_new_tokens=3, do_sample=True,
                                  seed=seed * 100003 + i, **kw).tokens
        counts[tuple(toks)] = counts.get(tuple(toks), 0) + 1
    return {k: v / n for k, v in counts.items()}


def tv(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


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
