"""Superposed Decoding: the n-gram tables against counts by hand, the interpolated step scores, one
forward per step for all drafts, k = 1 without n-grams is greedy (so the superposed-embedding
forward is the plain one), k completions returned, and bad input."""
import math

import numpy as np
import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.methods.superposed import step_logp
from decodelab.models import ToyLM
from decodelab.zoo.ngrams import NGrams

STREAM = [1, 2, 3, 1, 2, 4, 1, 2, 3, 0]  # "1 2" is followed by 3, 4, 3; "2" by 3, 4, 3


def test_ngram_probabilities_are_the_counts():
    g = NGrams.build(STREAM, vocab_size=5, orders=(2, 3))
    cand = np.array([[3, 4, 0], [3, 4, 0]])
    assert np.allclose(g.prob(3, [[9, 1, 2], [1, 2]], cand), [[2 / 3, 1 / 3, 0]] * 2)
    assert np.allclose(g.prob(2, [[2], [3]], cand), [[2 / 3, 1 / 3, 0], [0, 0, 0.5]])  # "3" is followed by 1 and 0
    assert np.allclose(g.prob(3, [[4, 4], [2]], cand), 0)  # an unseen context; one too short
    mixed = g.mix([[1, 2]], np.array([[3, 4]]), {2: 0.25, 3: 0.5})
    assert np.allclose(mixed, [[0.25 * 2 / 3 + 0.5 * 2 / 3, 0.25 / 3 + 0.5 / 3]])


def test_ngram_tables_survive_save_and_load(tmp_path):
    g = NGrams.build(STREAM, vocab_size=5, orders=(2, 3, 4))
    g.save(tmp_path / "t")
    h = NGrams.load(tmp_path / "t")
    cand = np.array([[0, 1, 2, 3, 4]])
    for n in (2, 3, 4):
        assert np.array_equal(g.prob(n, [[1, 2, 3]], cand), h.prob(n, [[1, 2, 3]], cand))


def test_large_vocabularies_hash_long_contexts():
    """50257 ** 5 > 2 ** 63: six-gram contexts are hashed, and still counted right here."""
    stream = [50000, 7, 123, 9, 50256, 11, 50000, 7, 123, 9, 50256, 12]
    g = NGrams.build(stream, vocab_size=50257, orders=(6,))
    assert np.allclose(g.prob(6, [[50000, 7, 123, 9, 50256]], np.array([[11, 12, 13]])), [[0.5, 0.5, 0]])


def test_step_scores_interpolate_in_log_space_and_penalise_blind_drafts():
    p_lm = torch.tensor([0.5, 0.3, 0.2])
    ngram = np.array([[0.4, 0.1, 0.0], [0.0, 0.0, 0.0]])
    out = step_logp(p_lm, ngram, 0.54, 200.0)
    assert torch.allclose(out[0, :2], 0.46 * torch.log(p_lm[:2].double()) + 0.54 * torch.log(torch.tensor([0.4, 0.1],
                                                                                                            dtype=torch.float64)))
    assert out[0, 2] == -math.inf  # a candidate no n-gram knows, while another is known
    assert torch.allclose(out[1], 0.46 * torch.log(p_lm.double()) - 200.0)  # no n-gram knows any candidate
    assert torch.allclose(step_logp(p_lm, None, 0.0, 200.0), torch.log(p_lm.double())[None])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3-sw8"])
def test_one_draft_without_ngrams_is_greedy(arch, tiny_dirs):
    """k = 1, alpha = 0: the superposition is the one draft's own embedding, so every step is the
    plain forward (Gemma scales its embeddings inside the embedding module: included)."""
    target = decodelab.load(tiny_dirs[arch][0])
    for prompt in ([3, 17, 5, 9], [42, 7]):
        greedy = decodelab.generate(target, prompt, max_new_tokens=20).tokens
        out = decodelab.generate(target, prompt, "superposed", num_drafts=1, alpha=0.0, lm_temperature=1.0,
                                 max_new_tokens=20)
        assert out.tokens == greedy and out.sequences == [greedy]


def test_k_drafts_share_one_forward_per_step(tiny_dirs):
    target = decodelab.load(tiny_dirs["llama"][0])
    out = decodelab.generate(target, [3, 17, 5, 9], "superposed", num_drafts=3, alpha=0.0, lm_temperature=1.0,
                             max_new_tokens=16, ignore_eos=True, logprobs=True)
    assert out.stats.target_forwards == 16 + 1  # one per step, and the teacher-forced forward for logprobs
    assert len(out.sequences) == 3 and len({tuple(s) for s in out.sequences}) == 3
    assert all(len(s) == 16 for s in out.sequences) and out.tokens == out.sequences[0]
    full = target.model(torch.tensor([[3, 17, 5, 9] + out.tokens])).logits[0, 3:-1].float()
    want = torch.log_softmax(full, -1)[torch.arange(16), torch.tensor(out.tokens)]
    assert torch.allclose(torch.tensor(out.logprobs), want, atol=1e-4)  # the target's own log p


class _Tokenizer:
    eos_token_id = None

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_ngrams_make_the_drafts_follow_the_corpus(monkeypatch, tiny_dirs):
    """With alpha near 1 and n-grams that only know '5 -> 6', every draft continues 5 with 6."""
    import decodelab.zoo.ngrams as ngrams

    grams = NGrams.build([5, 6] * 20, vocab_size=96, orders=(2, 3, 4, 5, 6))
    monkeypatch.setattr(ngrams, "for_tokenizer", lambda tok, v: grams)
    target = decodelab.load(tiny_dirs["llama"][0])
    target.tokenizer = _Tokenizer()  # any tokenizer: the n-grams are given
    out = decodelab.generate(target, [3, 5], "superposed", num_drafts=2, alpha=0.99, top_tokens=96,
                             lm_temperature=1.0, max_new_tokens=6, ignore_eos=True)
    assert out.sequences and all(s == [6, 5, 6, 5, 6, 5] for s in out.sequences)


@pytest.mark.parametrize("bad", [dict(num_drafts=0), dict(alpha=1.0), dict(ngram_weights="0.1,0.2"),
                                 dict(ngram_weights="a,b,c,d,e"), dict(ngram_weights="0,0,0,0,0"),
                                 dict(top_tokens=0), dict(lm_temperature=0.0)])
def test_bad_options_are_refused(bad, tiny_dirs):
    with pytest.raises(DecodeLabError):
        decodelab.generate(decodelab.load(tiny_dirs["llama"][0]), [1, 2], "superposed", max_new_tokens=2, **bad)


def test_refusals_name_what_is_missing(tiny_dirs):
    class NoEmbeds(ToyLM):  # ToyLM takes input embeddings (one-hot rows); this model does not
        capabilities = ToyLM.capabilities - {"embeds"}

    with pytest.raises(DecodeLabError, match="embeds"):
        decodelab.generate(NoEmbeds.random(6, seed=0), [1], "superposed", alpha=0.0, max_new_tokens=2)
    with pytest.raises(DecodeLabError, match="alpha=0"):  # n-grams need a tokenizer
        decodelab.generate(decodelab.load(tiny_dirs["llama"][0]), [1, 2], "superposed", max_new_tokens=2)
