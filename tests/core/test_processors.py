"""The llama.cpp sampler chain (core/processors.py) against hand-computed logits: the kept set
and the changed scores of every processor, the chain order, XTC as a mixture, and bad input."""
import math
from types import SimpleNamespace

import pytest
import torch

from decodelab.core import processors as P
from decodelab.core.sampling import SamplingConfig, probs_from_logits
from decodelab.errors import DecodeLabError

PROBS = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
LOGITS = torch.log(PROBS)


def kept(probs: torch.Tensor) -> list[int]:
    return (probs > 0).nonzero().flatten().tolist()


def cfg(**kw) -> SamplingConfig:
    return SamplingConfig(do_sample=True, **kw)


def test_llama_cpp_preset_is_llama_cpp_documented_default_order():
    # llama.cpp common/common.h, common_params_sampling::samplers (and common_sampler_type_to_str names)
    assert P.LLAMA_CPP_SAMPLERS == ("penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc",
                                    "temperature")
    assert P.parse_samplers("llama.cpp") == P.LLAMA_CPP_SAMPLERS
    assert P.parse_samplers(SamplingConfig().samplers) == P.TRANSFORMERS_SAMPLERS  # the default
    assert P.parse_samplers(" top_k; temperature ") == ("top_k", "temperature")
    assert P.DEFAULT_BREAKERS == ("\n", ":", "\"", "*")


@pytest.mark.parametrize("kw", [dict(temperature=0.6, top_p=0.8), dict(temperature=1.7, min_p=0.05),
                                dict(temperature=0.8, top_k=7, top_p=0.9, typical_p=0.7),
                                dict(temperature=1.3, min_p=0.02, typical_p=0.9, repetition_penalty=1.3)])
def test_default_order_gives_the_distribution_of_transformers_generate(kw):
    """The default chain equals transformers' own logits processors, built as `generate` builds
    them for the same arguments (penalty over the whole context: repeat_last_n=-1)."""
    from transformers import GenerationConfig
    from transformers.generation.utils import GenerationMixin

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g) * 3
    ctx = torch.randint(0, 50, (3, 20), generator=g)
    gc = GenerationConfig(do_sample=True, **kw)
    model = GenerationMixin.__new__(GenerationMixin)  # only what _get_logits_processor reads
    model.config = SimpleNamespace(is_encoder_decoder=False)
    procs = GenerationMixin._get_logits_processor(model, gc,
                                                  input_ids_seq_length=20, encoder_input_ids=ctx,
                                                  prefix_allowed_tokens_fn=None, logits_processor=None)
    want = torch.softmax(procs(ctx, logits.clone()), -1)
    ours = torch.stack([probs_from_logits(logits[i], cfg(**kw, repeat_last_n=-1), ctx=ctx[i].tolist())
                        for i in range(3)])
    assert torch.allclose(ours, want, atol=1e-6)
    if "repetition_penalty" not in kw:  # the order matters for these arguments: llama.cpp's differs
        llama = torch.stack([probs_from_logits(logits[i], cfg(**kw, samplers="llama.cpp")) for i in range(3)])
        assert not torch.allclose(llama, want, atol=1e-3)


def test_chain_lists_only_the_active_processors_in_order():
    c = cfg(temperature=0.7, top_k=3, min_p=0.1, repetition_penalty=1.1, xtc_probability=0.5)
    assert c.chain == ("penalties", "temperature", "top_k", "min_p", "xtc") and c.history
    assert cfg(temperature=0.7, top_k=3, samplers="llama.cpp").chain == ("top_k", "temperature")
    assert cfg().chain == () and not cfg().history
    assert not SamplingConfig(repetition_penalty=1.3).history  # greedy ignores the processors


def test_order_matters_min_p_before_or_after_temperature():
    """llama.cpp (temperature last): min_p 0.35 keeps p >= 0.175 of the raw distribution, then T = 2
    flattens the two kept tokens; transformers' order (temperature first) judges min_p on the
    flattened distribution (p ~ sqrt p: ratio to the top sqrt(p / 0.5) >= 0.35 keeps p >= 0.061)."""
    llama = probs_from_logits(LOGITS, cfg(min_p=0.35, temperature=2.0, samplers="llama.cpp"))
    assert kept(llama) == [0, 1]
    root = PROBS[:2].sqrt()
    assert torch.allclose(llama[:2], root / root.sum(), atol=1e-6)
    hf = probs_from_logits(LOGITS, cfg(min_p=0.35, temperature=2.0))  # the default, transformers' order
    assert torch.equal(hf, probs_from_logits(LOGITS, cfg(min_p=0.35, temperature=2.0,
                                                         samplers="temperature;top_k;top_p;min_p")))
    assert kept(hf) == [0, 1, 2, 3]
    root = PROBS[:4].sqrt()
    assert torch.allclose(hf[:4], root / root.sum(), atol=1e-6)


def test_typical_p_keeps_the_tokens_closest_to_the_entropy():
    # H = 1.3332 nats; |-log p - H| = [0.640, 0.276, 0.564, 0.970, 1.663]: order 1, 2, 0, 3, 4 with
    # mass before each 0, 0.2, 0.35, 0.85, 0.95
    h = float(-(PROBS * PROBS.log()).sum())
    assert math.isclose(h, 1.3332, abs_tol=1e-3)
    assert kept(probs_from_logits(LOGITS, cfg(typical_p=0.5))) == [0, 1, 2]
    p = probs_from_logits(LOGITS, cfg(typical_p=0.3))  # the most likely token is not typical here
    assert kept(p) == [1, 2]
    assert torch.allclose(p, torch.tensor([0, 0.2 / 0.35, 0.15 / 0.35, 0, 0]), atol=1e-6)
    assert kept(probs_from_logits(LOGITS, cfg(typical_p=0.01))) == [1]  # always at least one


def test_top_n_sigma_keeps_logits_within_n_std_of_the_top():
    x = torch.tensor([3.0, 2.0, 1.0, 0.0, -6.0])  # mean 0, population std sqrt(10) = 3.162
    assert kept(torch.isfinite(P.top_n_sigma(x, 1.0)).float()) == [0, 1, 2, 3]  # >= -0.162
    assert kept(torch.isfinite(P.top_n_sigma(x, 0.5)).float()) == [0, 1]  # >= 1.419
    dropped = torch.tensor([3.0, 2.0, 1.0, 0.0, -math.inf])  # -inf left out: mean 1.5, std 1.118
    assert kept(torch.isfinite(P.top_n_sigma(dropped, 1.0)).float()) == [0, 1]
    assert torch.equal(P.top_n_sigma(x, -1.0), x)  # off
    # the kept set does not depend on the temperature (Top-nσ's point)
    for t in (0.5, 2.0):
        assert kept(probs_from_logits(x, cfg(top_n_sigma=0.5, temperature=t))) == [0, 1]


def test_xtc_drops_all_top_choices_but_the_least_likely_as_a_mixture():
    x = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    branch = torch.tensor([0.0, 0.3, 0.2, 0.1]) / 0.6  # tokens 0 and 1 reach 0.25: token 0 goes
    assert torch.allclose(torch.softmax(P.xtc(x, 0.25), -1), branch, atol=1e-6)
    p = probs_from_logits(x, cfg(xtc_probability=0.5, xtc_threshold=0.25))
    assert torch.allclose(p, 0.5 * torch.tensor([0.4, 0.3, 0.2, 0.1]) + 0.5 * branch, atol=1e-6)
    assert torch.allclose(probs_from_logits(x, cfg(xtc_probability=1.0, xtc_threshold=0.25)), branch, atol=1e-6)
    # one token above the threshold: nothing to exclude; a threshold above 0.5 turns XTC off (llama.cpp)
    assert torch.allclose(probs_from_logits(x, cfg(xtc_probability=1.0, xtc_threshold=0.35)), x.exp(), atol=1e-6)
    assert cfg(xtc_probability=1.0, xtc_threshold=0.6).chain == ()


def test_penalties_change_the_scores_of_seen_tokens_only():
    x = torch.tensor([2.0, -1.0, 0.5, 0.0, 1.0])
    ctx = [0, 1, 1, 3]  # token 1 twice
    got = P.penalties(x[None], [ctx], 64, 2.0, 0.0, 0.0)[0]
    assert torch.allclose(got, torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0]))  # 2/2, -1*2, 0*2
    got = P.penalties(x[None], [ctx], 64, 2.0, 0.5, 0.25)[0]
    assert torch.allclose(got, torch.tensor([1.0 - 0.5 - 0.25, -2.0 - 1.0 - 0.25, 0.5, -0.5 - 0.25, 1.0]))
    got = P.penalties(x[None], [ctx], 2, 2.0, 0.0, 0.0)[0]  # only the last two tokens (1, 3) count
    assert torch.allclose(got, torch.tensor([2.0, -2.0, 0.5, 0.0, 1.0]))
    p = probs_from_logits(x, cfg(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25), ctx=ctx)
    assert torch.allclose(p, torch.softmax(torch.tensor([0.25, -3.25, 0.5, -0.75, 1.0]), -1), atol=1e-6)


def test_dry_penalises_tokens_that_extend_a_repeat():
    # llama.cpp's example: "a b c c b c y a b c" has repeat counts 0 0 3 1 0 2 0 0 0 0, so emitting
    # c would extend a repeat of 3 (a b c -> a b c c) and y one of 2 (b c -> b c y); b's is 1 < 2
    a, b, c, y = 0, 1, 2, 3
    ctx = [a, b, c, c, b, c, y, a, b, c]
    assert P.dry_repeats(ctx, 2, -1, None) == {c: 3, y: 2}
    got = P.dry(torch.zeros(1, 5), [ctx], 0.8, 1.75, 2, -1, None)[0]
    assert torch.allclose(got, torch.tensor([0.0, 0.0, -0.8 * 1.75, -0.8, 0.0]))
    brk = torch.zeros(5, dtype=torch.bool)
    brk[y] = True  # a breaker is never penalised; it is 3 tokens back, so c's repeat of 3 stands
    assert P.dry_repeats(ctx, 2, -1, brk) == {c: 3}
    brk[:] = False
    brk[a] = True  # a breaker 2 tokens back caps every repeat at 2
    assert P.dry_repeats(ctx, 2, -1, brk) == {c: 2, y: 2}
    brk[:] = False
    brk[c] = True  # the last token is a breaker: nothing repeats
    assert P.dry_repeats(ctx, 2, -1, brk) == {}
    assert P.dry_repeats(ctx, 2, 5, None) == {}  # the last 5 tokens "c y a b c" hold no repeat of 2
    assert P.dry_repeats(ctx, 4, -1, None) == {}


def test_dry_exponent_is_capped_like_llama_cpp():
    assert P.dry_exponent(10_000, 1.75) == int(88.7228391 / math.log(1.75))
    assert P.dry_exponent(3, 1.75) == 3
    ctx = [5] * 300  # a run of 5s: emitting 5 extends a repeat of 299
    assert P.dry_repeats(ctx, 2, -1, None) == {5: 299}
    assert torch.isfinite(P.dry(torch.zeros(1, 8), [ctx], 1.0, 1.75, 2, -1, None)).all()


def test_history_processors_need_and_use_each_rows_context():
    x = torch.zeros(2, 5)
    c = cfg(repetition_penalty=1.0, presence_penalty=1.0)
    p = probs_from_logits(x, c, ctx=[[0], [4, 4]])
    assert p[0, 0] < p[0, 1] and p[1, 4] < p[1, 0] and torch.isclose(p[0, 4], p[0, 1])
    with pytest.raises(ValueError, match="ctx"):
        probs_from_logits(x, c)


def test_processing_does_not_modify_its_input():
    x = torch.tensor([[2.0, -1.0, 0.5, 0.0, 1.0]] * 2)
    before = x.clone()
    probs_from_logits(x, cfg(repetition_penalty=1.5, dry_multiplier=0.8, typical_p=0.9, top_n_sigma=1.0,
                             xtc_probability=0.5, xtc_threshold=0.1, temperature=0.7),
                      ctx=[[0, 1, 0, 1, 0], [2, 2, 2]])
    assert torch.equal(x, before)


@pytest.mark.parametrize("bad", [dict(samplers="top_k;bogus"), dict(samplers="top_k;top_k"),
                                 dict(top_p=0.9, samplers="top_k;temperature"),
                                 dict(repetition_penalty=1.2, samplers="top_k"),
                                 dict(dry_sequence_breakers="not json"), dict(dry_sequence_breakers='["a", ""]'),
                                 dict(typical_p=0.0), dict(xtc_probability=1.5), dict(repetition_penalty=0.0),
                                 dict(dry_base=0.5), dict(dry_allowed_length=0), dict(repeat_last_n=-2),
                                 dict(presence_penalty=3.0), dict(top_n_sigma=float("nan"))])
def test_bad_processor_options_are_refused(bad):
    with pytest.raises(DecodeLabError):
        SamplingConfig(**bad)


def test_greedy_warns_about_every_ignored_processor():
    assert SamplingConfig(typical_p=0.5, dry_multiplier=1.0).ignored() == ["typical_p=0.5", "dry_multiplier=1.0"]
