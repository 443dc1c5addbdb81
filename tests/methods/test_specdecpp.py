"""SpecDec++: the stop rule, greedy equality with plain greedy (with a head on tiny models of every
architecture), exact sampling, config and head-loading errors."""
import pytest
import torch
from methods.spec_helpers import HFNext, check_converges, greedy_reference, noisy_copy, one_thread, request  # noqa: F401

import decodelab
from decodelab.core.sampling import SamplingConfig
from decodelab.errors import DecodeLabError
from decodelab.methods.specdecpp import AdaptiveChainDrafter, SpecDecPPConfig
from decodelab.train.acceptance_head import ACCEPT, AcceptanceHead

PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]


class ConstHead:
    """A head that always predicts P(accept) = a."""

    def __init__(self, a):
        self.a = a

    def p_accept(self, h):
        return torch.tensor(self.a)


@pytest.mark.parametrize("a,cfg,want", [(0.9, {}, 4),  # 1 - 0.9^4 = 0.34 > 0.3 first at 4
                                        (0.99, dict(max_len=5), 5),  # never unsure: stop at max_len
                                        (0.1, {}, 2),  # unsure at once, but min_len = 2
                                        (0.5, dict(min_len=3, threshold=0.95), 5)])  # 1 - 0.5^5 > 0.95
def test_stop_rule(tiny_pair, a, cfg, want):
    _, target, draft = tiny_pair
    d = AdaptiveChainDrafter(request(draft, draft), ConstHead(a), SpecDecPPConfig(**cfg))
    prop = d.propose(torch.tensor(PROMPT), 50)
    assert len(prop.tree) - 1 == want
    assert len(d.propose(torch.tensor(PROMPT), 1).tree) == 2  # the loop's depth limit wins


def _save_head(tmp_path, hidden, seed=0):
    torch.manual_seed(seed)
    head = AcceptanceHead(hidden)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.5)
    return str(head.save(tmp_path / "head", {"draft": "test"}))


def test_greedy_equals_greedy_with_a_head(tiny_pair, one_thread, tmp_path):
    arch, target, draft = tiny_pair
    ref = greedy_reference(target, PROMPT, 40)
    for d in (draft, noisy_copy(target, 0.15)):
        path = _save_head(tmp_path, d.config.hidden_size)
        for kw in (dict(head=path), dict(head=path, threshold=0.9, max_len=6), dict(head="none", max_len=4)):
            out = decodelab.generate(target, PROMPT, "specdecpp", draft=d, max_new_tokens=40, ignore_eos=True, **kw)
            assert out.tokens == ref, (arch, kw)
    assert out.stats.tau > 1.0


def test_sampling_matches_target_distribution(tiny_dirs, one_thread, tmp_path):
    """Tiny llama pair with top-k 3 (so the exact distribution of 3 tokens has 27 outcomes)."""
    target, draft = decodelab.load(tiny_dirs["llama"][0]), decodelab.load(tiny_dirs["llama"][1])
    path = _save_head(tmp_path, draft.config.hidden_size)
    check_converges("specdecpp", target, draft, sizes=(100, 800), prompt=PROMPT, exact_target=HFNext(target),
                    exact_draft=HFNext(draft), head=path, top_k=3, threshold=0.5)


def test_head_errors(tiny_pair, tmp_path):
    _, target, draft = tiny_pair
    with pytest.raises(DecodeLabError, match="no acceptance head"):
        decodelab.generate(target, PROMPT, "specdecpp", draft=draft, head=str(tmp_path / "missing"))
    path = _save_head(tmp_path, draft.config.hidden_size + 1)
    with pytest.raises(DecodeLabError, match="hidden size"):
        decodelab.generate(target, PROMPT, "specdecpp", draft=draft, head=path)
    (tmp_path / "head" / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(DecodeLabError, match="corrupt"):
        decodelab.generate(target, PROMPT, "specdecpp", draft=draft, head=path)


def test_config_validation():
    with pytest.raises(DecodeLabError, match="threshold"):
        SpecDecPPConfig(threshold=1.5)
    with pytest.raises(DecodeLabError, match="min_len"):
        SpecDecPPConfig(min_len=5, max_len=3)


def test_head_accept_class_is_index_1():
    head = AcceptanceHead(4, blocks=1)
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.copy_(torch.tensor([0.0, 2.0]))
    assert ACCEPT == 1 and float(head.p_accept(torch.zeros(4))) == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
