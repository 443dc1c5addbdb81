"""Diverse Beam Search: G = 1 is beam search exactly, independent groups of one beam are greedy,
the Hamming term moves later groups off earlier groups' tokens by exactly lambda per beam, every
beam of every group in one forward per step, B sequences returned, and bad input."""
import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.models import ToyLM


@pytest.mark.parametrize("num_beams", [1, 3, 4])
def test_one_group_is_beam_search(num_beams, tiny_pair):
    _, target, _ = tiny_pair
    for prompt in ([3, 17, 5, 9], [42, 7, 7, 1]):
        ref = decodelab.generate(target, prompt, "beam", num_beams=num_beams, max_new_tokens=12, logprobs=True)
        got = decodelab.generate(target, prompt, "diverse_beam", num_beams=num_beams, num_beam_groups=1,
                                 diversity_penalty=0.7, max_new_tokens=12, logprobs=True)
        assert got.tokens == ref.tokens and got.logprobs == ref.logprobs and got.sequences == ref.sequences
        assert len(got.sequences) == num_beams


def test_one_group_is_beam_search_with_stop_tokens_and_length_penalty():
    for seed in range(4):
        lm = ToyLM.random(8, order=2, seed=seed, scale=1.0, eos_token_id=0)
        for lp in (0.5, 1.0, 2.0):
            ref = decodelab.generate(lm, [1, 2], "beam", num_beams=3, length_penalty=lp, max_new_tokens=9)
            got = decodelab.generate(lm, [1, 2], "diverse_beam", num_beams=3, num_beam_groups=1, length_penalty=lp,
                                     max_new_tokens=9)
            assert (got.tokens, got.sequences) == (ref.tokens, ref.sequences)


def test_independent_groups_of_one_beam_are_greedy(tiny_dirs):
    target = decodelab.load(tiny_dirs["llama"][0])
    greedy = decodelab.generate(target, [3, 17, 5, 9], max_new_tokens=10).tokens
    out = decodelab.generate(target, [3, 17, 5, 9], "diverse_beam", num_beams=3, num_beam_groups=3,
                             diversity_penalty=0.0, max_new_tokens=10)
    assert out.sequences == [greedy] * 3


def test_the_hamming_term_costs_lambda_per_earlier_beam():
    """One step, two groups of one beam: group 2 takes the runner-up token when its log-prob gap to
    the top token is below lambda, else the top token again."""
    lm = ToyLM(torch.log(torch.tensor([[0.1, 0.5, 0.3, 0.1]] * 4)))  # gap log(0.5 / 0.3) = 0.51
    for lam, second in ((0.6, 2), (0.4, 1)):
        out = decodelab.generate(lm, [0], "diverse_beam", num_beams=2, num_beam_groups=2, diversity_penalty=lam,
                                 max_new_tokens=1)
        assert out.sequences == [[1], [second]] and out.tokens == [1]


def test_a_large_lambda_makes_groups_differ_at_every_step():
    lm = ToyLM.random(10, order=2, seed=3, scale=1.5)
    out = decodelab.generate(lm, [1, 2], "diverse_beam", num_beams=3, num_beam_groups=3, diversity_penalty=100.0,
                             max_new_tokens=8)
    a, b, c = out.sequences
    assert all(len({x, y, z}) == 3 for x, y, z in zip(a, b, c))


def test_every_beam_advances_in_one_forward_per_step(tiny_dirs):
    target = decodelab.load(tiny_dirs["gpt2"][0])
    out = decodelab.generate(target, [3, 17, 5, 9], "diverse_beam", num_beams=6, num_beam_groups=3, max_new_tokens=9,
                             ignore_eos=True)
    assert out.stats.target_forwards == 9 and len(out.sequences) == 6
    assert out.tokens == out.sequences[0] and all(len(s) == 9 for s in out.sequences)


@pytest.mark.parametrize("bad", [dict(num_beams=4, num_beam_groups=3), dict(diversity_penalty=-0.1),
                                 dict(num_beam_groups=0), dict(num_beams=65)])
def test_bad_input_is_refused(bad):
    with pytest.raises(DecodeLabError):
        decodelab.generate(ToyLM.random(6, seed=0), [1], "diverse_beam", max_new_tokens=2, **bad)


def test_cli_json_prints_every_beam(tiny_dirs, capsys):
    import json

    from decodelab.cli import main

    assert main(["generate", "3,17,5,9", "--ids", "--model", tiny_dirs["llama"][0], "--method", "diverse_beam",
                 "--num-beams", "4", "--num-beam-groups", "2", "--max-new-tokens", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["sequences"]) == 4 and out["tokens"] == out["sequences"][0] and "texts" not in out  # no tokenizer
