import pytest

import decodelab
from decodelab.models import ToyLM
from decodelab.rewards import Keywords
from methods.search_helpers import recorded  # noqa: F401


def test_one_candidate_one_beam_is_greedy(tiny_pair):
    _, target, _ = tiny_pair
    for lookahead in (1, 3, 5):
        want = decodelab.generate(target, [3, 17, 5, 9], max_new_tokens=17, logprobs=True)
        got = decodelab.generate(target, [3, 17, 5, 9], "deal", init_beams=1, num_beams=1, lookahead=lookahead,
                                 max_new_tokens=17, logprobs=True)
        assert got.tokens == want.tokens
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_all_candidates_share_one_forward_per_lookahead_token(tiny_pair, recorded):
    _, target, _ = tiny_pair
    greedy = decodelab.generate(target, [3, 17, 5, 9], max_new_tokens=12, ignore_eos=True)
    out = decodelab.generate(target, [3, 17, 5, 9], "deal", init_beams=8, num_beams=4, lookahead=4,
                             max_new_tokens=12, ignore_eos=True)
    assert [len(c) for c, _ in recorded] == [1, 4, 4]  # kept beams per iteration
    assert all(len(trials) == 8 * len(c) for c, trials in recorded)
    assert out.stats.target_forwards == greedy.stats.target_forwards == 12  # batched, not 8 x 4 x more
    assert out.stats.target_tokens_scored == 1 + 8 * 3 + (4 + 32 * 3) * 2


def test_greedy_mode_candidates_start_with_each_beams_top_tokens(recorded):
    lm = ToyLM.random(10, order=2, seed=0)
    decodelab.generate(lm, [1, 2], "deal", init_beams=3, num_beams=2, lookahead=2, max_new_tokens=6)
    for contexts, trials in recorded:
        for j, ctx in enumerate(contexts):
            top = lm.next_logits(ctx).topk(3).indices.tolist()
            firsts = [t.tokens[0] for t in trials if t.source == j]
            assert firsts == top
            for t in trials:  # then greedy
                if t.source == j and len(t.tokens) > 1:
                    assert t.tokens[1] == int(lm.next_logits(ctx + t.tokens[:1]).argmax())


def test_the_reward_steers_the_output_to_the_constraint():
    """A keyword the greedy output lacks: DeAL keeps the candidates that contain it."""
    lm = ToyLM.random(6, order=2, seed=3)
    prompt = [1, 2]
    greedy = decodelab.generate(lm, prompt, max_new_tokens=8).tokens
    missing = next(x for x in range(6) if x not in greedy)
    want = Keywords([str(missing)])  # a tokenizer-less model's text is its ids joined by spaces
    assert want.score("", " ".join(map(str, greedy)), True) == 0.0
    out = decodelab.generate(lm, prompt, "deal", reward=want, init_beams=6, num_beams=2, lookahead=2,
                             max_new_tokens=8)
    assert missing in out.tokens
    plain = decodelab.generate(lm, prompt, "deal", init_beams=6, num_beams=2, lookahead=2, max_new_tokens=8)
    assert missing not in plain.tokens  # without the reward the same search does not find it


def test_sampling_mode_is_seeded():
    lm = ToyLM.random(6, order=2, seed=3)
    kw = dict(do_sample=True, init_beams=4, num_beams=2, lookahead=3, max_new_tokens=12)
    runs = [decodelab.generate(lm, [1, 2], "deal", seed=s, **kw).tokens for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]
