"""The diffusion rules on hand-built tensors: proposals (argmax, float64 Gumbel-max, the mask never
proposed), LLaDA's even split, the ascending schedule, stable top-k, Fast-dLLM's threshold and
factor rules."""
import math

import pytest
import torch

from decodelab.core import unmask
from decodelab.core.sampling import SamplingConfig
from decodelab.errors import DecodeLabError

GREEDY = SamplingConfig()


def test_greedy_proposal_and_confidence():
    logits = torch.tensor([[0.0, 2.0, 1.0, 5.0], [3.0, 0.0, 0.0, 0.0]])  # token 3 is the mask
    before = logits.clone()
    x0, conf = unmask.propose(logits, GREEDY, None, mask_id=3)
    assert x0.tolist() == [1, 0]  # row 0's argmax is the mask: the best other token instead
    p = torch.softmax(logits.double(), -1)
    assert torch.equal(conf, p[[0, 1], [1, 0]]) and conf.dtype == torch.float64  # softmax over every token
    assert torch.equal(logits, before)  # input untouched


def test_float64_confidence_keeps_float32_ties_apart():
    """Two confident rows that a float32 softmax rounds to exactly 1.0 stay ordered in float64."""
    logits = torch.tensor([[20.0, 0.0], [25.0, 0.0]])
    assert torch.softmax(logits, -1)[:, 0].tolist() == [1.0, 1.0]
    _, conf = unmask.propose(logits, GREEDY, None)
    assert conf[1] > conf[0] and unmask.top_k(conf, 1).tolist() == [1]


def test_gumbel_max_picks_llada_s_token_for_the_same_noise():
    """argmax(l / T - log(-log u)) == LLaDA's argmax(exp(l) / (-log u) ** T), for the same u."""
    torch.manual_seed(0)
    logits = torch.randn(64, 50) * 3
    cfg = SamplingConfig(do_sample=True, temperature=0.7)
    x0, _ = unmask.propose(logits, cfg, torch.Generator().manual_seed(5))
    u = torch.rand(logits.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    llada = (logits.double().exp() / (-torch.log(u)) ** 0.7).argmax(-1)
    assert torch.equal(x0, llada)


def test_gumbel_max_samples_softmax_over_temperature():
    logits = torch.tensor([[1.0, 0.0, -1.0, 0.5]])
    cfg = SamplingConfig(do_sample=True, temperature=2.0)
    g = torch.Generator().manual_seed(0)
    n = 20000
    counts = torch.bincount(torch.cat([unmask.propose(logits, cfg, g)[0] for _ in range(n)]), minlength=4)
    want = torch.softmax(logits[0] / 2.0, -1)
    tv = 0.5 * (counts / n - want).abs().sum()
    assert tv < 0.015  # i.i.d. expectation ~0.005 at n = 20000


def test_filters_drop_tokens_before_the_draw():
    logits = torch.tensor([[3.0, 2.9, 2.8, -5.0]])
    cfg = SamplingConfig(do_sample=True, top_k=2)
    g = torch.Generator().manual_seed(1)
    assert {int(unmask.propose(logits, cfg, g)[0]) for _ in range(300)} == {0, 1}


def test_even_split_is_llada_s():
    assert unmask.even_split(24, 24) == [1] * 24
    assert unmask.even_split(10, 4) == [3, 3, 2, 2]
    assert unmask.even_split(8, 3) == [3, 3, 2] and sum(unmask.even_split(97, 13)) == 97


def test_ascending_split():
    assert unmask.ascending_split(128, 7) == [1, 2, 4, 8, 16, 32, 65]  # their G = 2^S example
    assert unmask.ascending_split(24, 4) == [1, 2, 4, 17]
    assert unmask.ascending_split(24, 5) == [1, 2, 4, 8, 9]
    assert unmask.ascending_split(3, 1) == [3]
    with pytest.raises(DecodeLabError, match="at most floor\\(log2\\(24\\)\\) \\+ 1 = 5 steps"):
        unmask.ascending_split(24, 6)


def test_top_k_is_stable_and_skips_minus_inf():
    score = torch.tensor([0.5, 1.0, 1.0, 0.2, 1.0, -math.inf], dtype=torch.float64)
    assert unmask.top_k(score, 3).tolist() == [1, 2, 4]  # ties: the leftmost first
    assert unmask.top_k(score, 4).tolist() == [1, 2, 4, 0]


def test_threshold_rule():
    conf = torch.tensor([0.95, 0.3, -math.inf, 0.9, 0.99], dtype=torch.float64)
    assert unmask.above_threshold(conf, 0.9).tolist() == [4, 0, 3]  # >= threshold, in confidence order
    assert unmask.above_threshold(conf, 0.999).tolist() == [4]  # the most confident always
    assert unmask.above_threshold(conf, 0.0).tolist() == [4, 0, 3, 1]  # never a committed position


def test_factor_rule():
    # (n + 1)(1 - c_n) < f: n=1: 2*0.01 = .02, n=2: 3*0.2 = .6, n=3: 4*0.3 = 1.2, n=4: 5*0.5 = 2.5
    c = torch.tensor([0.99, 0.8, 0.7, 0.5], dtype=torch.float64)
    assert unmask.factor_count(c, 1.0) == 2
    assert unmask.factor_count(c, 2.0) == 3
    assert unmask.factor_count(c, 0.01) == 1  # at least one
    assert unmask.factor_count(c, 10.0) == 4
