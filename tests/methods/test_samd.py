"""SAM-Decoding: which drafter drafts a step, greedy equality with plain greedy (tiny models of every
architecture) with both kinds of step seen, exact sampling on ToyLM pairs, config validation."""
import pytest
import torch
from methods.spec_helpers import check_converges, equal_to_greedy, one_thread  # noqa: F401

import decodelab
from decodelab.core.tree import Draft, TokenTree
from decodelab.errors import DecodeLabError
from decodelab.methods.pld import LookupDrafter, PLDConfig
from decodelab.methods.samd import SamdConfig, SamDrafter


class _Model:
    """A stand-in draft-model drafter: drafts [7, 7] and records what it was asked and shown."""

    def __init__(self):
        self.proposed, self.observed = 0, 0

    def propose(self, ctx, max_depth):
        self.proposed += 1
        return Draft(TokenTree.chain([int(ctx[-1]), 7, 7]))

    def observe(self, draft, path, logits):
        self.observed += 1


def test_a_long_enough_match_is_copied_and_a_short_one_goes_to_the_model():
    model = _Model()
    d = SamDrafter(LookupDrafter(PLDConfig(num_tokens=3, min_ngram=2, max_ngram=4)), model)
    draft = d.propose(torch.tensor([5, 1, 2, 3, 9, 1, 2]), 8)  # "1 2" occurred before: copy what followed
    assert draft.tree.tokens.tolist() == [2, 3, 9, 1] and d.copied
    d.observe(draft, [0, 1], None)
    assert model.proposed == 0 and model.observed == 0
    draft = d.propose(torch.tensor([5, 1, 2, 3, 9, 1, 2, 6, 4, 2]), 8)  # only "2" recurs: below the threshold
    assert draft.tree.tokens.tolist() == [2, 7, 7] and not d.copied
    d.observe(draft, [0], None)
    assert model.proposed == 1 and model.observed == 1


def test_greedy_equality_tiny_models_with_both_kinds_of_step(tiny_pair, one_thread, monkeypatch):
    arch, target, draft = tiny_pair
    seen = []
    propose = SamDrafter.propose

    def spy(self, ctx, max_depth):
        out = propose(self, ctx, max_depth)
        seen.append(self.copied)
        return out

    monkeypatch.setattr(SamDrafter, "propose", spy)
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, target.vocab_size, (12,), generator=g).tolist()
    own = decodelab.generate(target, prompt, "greedy", max_new_tokens=40, ignore_eos=True).tokens
    long = prompt + own + prompt  # the target's own output repeated: long matches for part of the way
    for kw in ({}, {"num_tokens": 4, "gamma": 2}, {"len_threshold": 1, "gamma": 1}):
        equal_to_greedy("samd", target, long, 40, draft=draft, **kw)
        equal_to_greedy("samd", target, prompt, 24, draft=draft, **kw)
    assert True in seen and False in seen, arch  # copied drafts and the model's drafts both ran


def test_sampling_matches_target_distribution(toy_pair, one_thread):
    target, draft = toy_pair
    # threshold 1 and a repetitive prompt: copied drafts on some steps, the model's on others
    check_converges("samd", target, draft, sizes=(150, 1200), prompt=(1, 2, 1), len_threshold=1, gamma=2,
                    num_tokens=2)


def test_config_validation():
    with pytest.raises(DecodeLabError, match="len_threshold"):
        SamdConfig(len_threshold=5, max_ngram=4)
    with pytest.raises(DecodeLabError, match="gamma"):
        SamdConfig(gamma=0)
    toy = decodelab.models.ToyLM.random(4)
    with pytest.raises(DecodeLabError, match="draft"):
        decodelab.generate(toy, [1, 2], "samd")
