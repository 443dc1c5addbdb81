import math

import pytest
import torch

from decodelab.core.sampling import SamplingConfig, check_finite, choose, greedy_ids, gumbel_top_k, probs_from_logits
from decodelab.errors import DecodeLabError

LOGITS = torch.log(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]))


def test_greedy_config_is_plain_softmax():
    p = probs_from_logits(LOGITS, SamplingConfig())
    assert torch.allclose(p, torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]), atol=1e-6)


def test_temperature_sharpens_and_flattens():
    cold = probs_from_logits(LOGITS, SamplingConfig(do_sample=True, temperature=0.5))
    hot = probs_from_logits(LOGITS, SamplingConfig(do_sample=True, temperature=2.0))
    assert cold[0] > 0.5 > hot[0]
    expected = torch.softmax(LOGITS / 0.5, -1)
    assert torch.allclose(cold, expected, atol=1e-6)


def test_top_k_keeps_k_renormalised():
    p = probs_from_logits(LOGITS, SamplingConfig(do_sample=True, top_k=2))
    assert torch.allclose(p, torch.tensor([0.5 / 0.7, 0.2 / 0.7, 0, 0, 0]), atol=1e-6)


def test_top_p_keeps_smallest_prefix_reaching_p():
    # 0.5 + 0.2 = 0.7 < 0.75, so the third token is needed; the fourth is not
    p = probs_from_logits(LOGITS, SamplingConfig(do_sample=True, top_p=0.75))
    assert (p > 0).tolist() == [True, True, True, False, False]
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-6)
    only_top = probs_from_logits(LOGITS, SamplingConfig(do_sample=True, top_p=0.1))
    assert (only_top > 0).tolist() == [True, False, False, False, False]


def test_min_p_drops_tokens_below_fraction_of_top():
    p = probs_from_logits(LOGITS, SamplingConfig(do_sample=True, min_p=0.3))  # keep >= 0.15
    assert (p > 0).tolist() == [True, True, True, False, False]


def test_processing_does_not_modify_input():
    x = LOGITS.clone()
    probs_from_logits(x, SamplingConfig(do_sample=True, top_k=2, top_p=0.5, min_p=0.1, temperature=0.7))
    assert torch.equal(x, LOGITS)


def test_batched_rows_processed_independently():
    rows = torch.stack([LOGITS, LOGITS.flip(0)])
    p = probs_from_logits(rows, SamplingConfig(do_sample=True, top_k=1))
    assert p[0].argmax() == 0 and p[1].argmax() == 4 and torch.allclose(p.sum(-1), torch.ones(2))


def test_choose_greedy_and_seeded_sampling_is_reproducible():
    assert int(choose(LOGITS, SamplingConfig(), None)) == 0
    cfg = SamplingConfig(do_sample=True, seed=7)
    a = [int(choose(LOGITS, cfg, g)) for g in [cfg.generator()] for _ in range(20)]
    g2 = cfg.generator()
    b = [int(choose(LOGITS, cfg, g2)) for _ in range(20)]
    assert a == b and len(set(a)) > 1


@pytest.mark.parametrize("bad", [dict(temperature=0), dict(temperature=-1), dict(top_k=-1), dict(top_p=0),
                                 dict(top_p=1.5), dict(min_p=1.0)])
def test_bad_sampling_config_is_refused(bad):
    with pytest.raises(DecodeLabError):
        SamplingConfig(**bad)


def test_gumbel_top_k_draws_distinct_and_first_draw_follows_p():
    g = torch.Generator().manual_seed(0)
    logp = LOGITS
    firsts = torch.zeros(5)
    n = 20000
    for _ in range(n):
        ids = gumbel_top_k(logp, 3, g)
        assert len(set(ids.tolist())) == 3
        firsts[ids[0]] += 1
    assert torch.allclose(firsts / n, logp.exp(), atol=0.015)


def test_gumbel_top_k_never_draws_zero_probability():
    logp = torch.log(torch.tensor([0.5, 0.5, 0.0, 0.0]))
    ids = gumbel_top_k(logp, 4, torch.Generator().manual_seed(1))
    assert sorted(ids.tolist()) == [0, 1]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_finite_refuses_nan_and_inf(bad):
    x = torch.zeros(3, 7)
    x[1, 4] = bad
    with pytest.raises(DecodeLabError, match="NaN or inf"):
        check_finite(x)


@pytest.mark.parametrize("as_tensor", [lambda x: x, lambda x: x.double(), lambda x: x.numpy()],
                         ids=["float32", "torch-path", "numpy-array"])
def test_greedy_ids_is_the_argmax_and_refuses_what_greedy_would_pick_from_garbage(as_tensor):
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    assert greedy_ids(as_tensor(x)) == x.argmax(-1).tolist()
    assert greedy_ids(as_tensor(x[1])) == int(x[1].argmax())
    masked = x.clone()
    masked[1, int(x[1].argmin())] = float("-inf")  # a masked token: never the argmax, let through
    assert greedy_ids(as_tensor(masked)) == x.argmax(-1).tolist()
    for bad in (float("nan"), float("inf")):  # anywhere in a row: they win the argmax
        y = x.clone()
        y[2, int(x[2].argmin())] = bad
        with pytest.raises(DecodeLabError, match="NaN or inf"):
            greedy_ids(as_tensor(y))
        with pytest.raises(DecodeLabError, match="NaN or inf"):
            greedy_ids(as_tensor(y[2]))
    y = x.clone()
    y[0] = float("-inf")  # nothing to pick
    with pytest.raises(DecodeLabError, match="NaN or inf"):
        greedy_ids(as_tensor(y))


def test_check_finite_accepts_large_logits_whose_sum_overflows():
    x = torch.full((4, 8), 3e38)  # finite, but their float32 sum is inf
    assert not torch.isfinite(x.sum())
    check_finite(x)
    check_finite(torch.randn(9, 4096))
