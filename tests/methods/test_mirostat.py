"""Mirostat: the Zipf estimate and k (v1), the surprise truncation (v2), the mu update, convergence of
the observed surprise to tau, llama.cpp's names as aliases, and its refusals."""
import math

import pytest
import torch

import decodelab
from decodelab.cli import main
from decodelab.errors import DecodeLabError
from decodelab.methods.mirostat import Mirostat, MirostatConfig, zipf_exponent, zipf_k
from decodelab.models import ToyLM


@pytest.mark.parametrize("s", [0.8, 1.1, 1.5])
def test_zipf_exponent_recovers_an_exact_zipf_law(s):
    p = torch.arange(1, 4097, dtype=torch.float64) ** -s
    p /= p.sum()
    assert math.isclose(zipf_exponent(p, 100), s, rel_tol=1e-9)


def test_k_follows_the_papers_formula():
    s, mu, v = 1.1, 10.0, 4096
    eps = s - 1
    assert zipf_k(s, mu, v) == int(((eps * 2 ** mu) / (1 - v ** -eps)) ** (1 / s))  # 113
    assert zipf_k(s, mu, v) == 113
    assert zipf_k(1.0, 10.0, v) == int((2 ** 10 / math.log(v)) ** 1.0)  # the eps -> 0 limit
    assert zipf_k(1.1, 500.0, v) == v and zipf_k(3.0, 0.0, v) == 1  # 2^500 does not overflow; at least one


def test_v2_keeps_tokens_whose_surprise_is_at_most_mu():
    ctl = Mirostat(MirostatConfig(version=2, tau=1.25), 1.0, torch.Generator().manual_seed(0))
    logp = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.0625], dtype=torch.float64))  # 1, 2, 3, 4, 4 bits
    assert ctl.mu == 2.5
    assert ctl.keep(logp).tolist() == [True, True, False, False, False]
    ctl.mu = 0.5
    assert ctl.keep(logp).tolist() == [True, False, False, False, False]  # never empty


def test_v1_keeps_the_top_k():
    ctl = Mirostat(MirostatConfig(version=1, tau=5.0, m=100), 1.0, torch.Generator().manual_seed(0))
    p = torch.arange(1, 4097, dtype=torch.float64) ** -1.1
    logp = (p / p.sum()).log()[torch.randperm(4096, generator=torch.Generator().manual_seed(1))]
    keep = ctl.keep(logp)
    assert int(keep.sum()) == zipf_k(1.1, 10.0, 4096) == 113
    assert float(logp[keep].min()) >= float(logp[~keep].max())


def test_mu_moves_by_eta_times_the_surprise_error():
    """S is the chosen token's surprise under the full distribution (the paper), not the truncated one."""
    ctl = Mirostat(MirostatConfig(version=2, tau=1.0, eta=0.5), 1.0, torch.Generator().manual_seed(3))
    logits = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    x = ctl.step(logits)
    assert x in (0, 1)  # mu = 2: surprises 1 and 2 bits are kept
    s = -math.log2([0.5, 0.25][x])
    assert math.isclose(ctl.surprises[0], s, rel_tol=1e-6) and math.isclose(ctl.mu, 2.0 - 0.5 * (s - 1.0), rel_tol=1e-6)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("tau", [3.0, 3.75])
def test_observed_surprise_converges_to_tau(version, tau):
    """On a ToyLM whose greedy tokens average 2.7 bits of surprise and whose entropy averages 4.7
    bits, the mean surprise of a Mirostat generation (the target's log p, logprobs=True) is tau;
    plain sampling is far from it."""
    lm = ToyLM.random(48, order=2, seed=4, scale=1.2)
    out = decodelab.generate(lm, [1, 2], "mirostat", version=version, tau=tau, eta=0.5, seed=0, max_new_tokens=1500,
                             ignore_eos=True, logprobs=True)
    mean = -sum(out.logprobs) / len(out.logprobs) / math.log(2)
    assert abs(mean - tau) < 0.1, mean
    plain = decodelab.generate(lm, [1, 2], "sample", seed=0, max_new_tokens=1500, ignore_eos=True, logprobs=True)
    assert -sum(plain.logprobs) / len(plain.logprobs) / math.log(2) > tau + 0.5


def test_llama_cpp_names_are_aliases():
    lm = ToyLM.random(16, order=1, seed=0)
    a = decodelab.generate(lm, [1], "mirostat", tau=2.5, eta=0.2, version=1, seed=5, max_new_tokens=30).tokens
    b = decodelab.generate(lm, [1], "mirostat", mirostat_tau=2.5, mirostat_eta=0.2, mirostat=1, seed=5,
                           max_new_tokens=30).tokens
    assert a == b
    assert [o["aliases"] for o in decodelab.methods()["mirostat"]["options"]] == [["mirostat"], ["mirostat_tau"],
                                                                               ["mirostat_eta"], []]
    with pytest.raises(DecodeLabError, match="given twice"):
        decodelab.generate(lm, [1], "mirostat", tau=2.5, mirostat_tau=3.0)


def test_cli_takes_the_llama_cpp_flags(tiny_dirs, capsys):
    args = ["generate", "3,4,5", "--ids", "--model", tiny_dirs["llama"][0], "--method", "mirostat", "--seed", "1",
            "--max-new-tokens", "6"]
    assert main(args + ["--mirostat-tau", "2.0", "--mirostat-eta", "0.3"]) == 0
    first = capsys.readouterr().out
    assert main(args + ["--tau", "2.0", "--eta", "0.3"]) == 0
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("bad", [dict(top_k=5), dict(typical_p=0.9), dict(repetition_penalty=1.2), dict(version=3),
                                 dict(tau=0.0), dict(eta=-0.1), dict(m=1)])
def test_bad_input_is_refused(bad):
    with pytest.raises(DecodeLabError):
        decodelab.generate(ToyLM.random(8, seed=0), [1], "mirostat", max_new_tokens=2, **bad)
