import itertools

import torch

import decodelab
from decodelab.models import ToyLM


def test_one_beam_is_greedy(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0])
    assert (decodelab.generate(model, [3, 4, 5], "beam", num_beams=1, max_new_tokens=12).tokens
            == decodelab.generate(model, [3, 4, 5], max_new_tokens=12).tokens)


def test_wide_beam_finds_the_exact_best_sequence():
    lm = ToyLM.random(4, order=2, seed=5, scale=2.0)
    prompt, length = [1, 2], 3

    def logp(seq):
        ctx, total = list(prompt), 0.0
        for t in seq:
            total += float(torch.log_softmax(lm.next_logits(ctx), -1)[t])
            ctx.append(t)
        return total

    best = max(itertools.product(range(4), repeat=length), key=logp)
    out = decodelab.generate(lm, prompt, "beam", num_beams=4 ** length, max_new_tokens=length)
    assert tuple(out.tokens) == best
    greedy = decodelab.generate(lm, prompt, max_new_tokens=length).tokens
    assert logp(out.tokens) >= logp(greedy)


def test_beam_matches_transformers_beam_search(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0])
    for beams in (2, 3):
        ours = decodelab.generate(model, [3, 17, 5, 9], "beam", num_beams=beams, max_new_tokens=10).tokens
        ref = model.model.generate(torch.tensor([[3, 17, 5, 9]]), attention_mask=torch.ones(1, 4, dtype=torch.long),
                                   max_new_tokens=10, num_beams=beams, do_sample=False)[0, 4:].tolist()
        assert ours == ref
