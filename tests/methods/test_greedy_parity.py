"""Our greedy equals transformers generate(do_sample=False) token for token, on tiny random models
of every conftest architecture saved with save_pretrained and loaded back through decodelab.load:
40 new tokens run well past the sliding windows (8) of the sliding-window variants."""
import pytest
import torch

import decodelab

from conftest import ALL_ARCHS

PROMPTS = [[3, 17, 5, 9], [42], [7, 7, 7, 7, 7, 7, 7, 7, 1, 2, 3]]


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_greedy_equals_transformers_generate(arch, tiny_dirs):
    model = decodelab.load(tiny_dirs[arch][0])
    for prompt in PROMPTS:
        ours = decodelab.generate(model, prompt, max_new_tokens=40)
        ref = model.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                   max_new_tokens=40, do_sample=False)
        assert ours.tokens == ref[0, len(prompt):].tolist()
        assert ours.stats.new_tokens == 40 and ours.stats.target_forwards == 40 and ours.stats.tau == 1.0


def test_greedy_stops_at_eos_like_transformers(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0])
    free = decodelab.generate(model, [3, 17, 5, 9], max_new_tokens=30).tokens
    eos = free[12]  # make a token that greedy emits at step 13 the end-of-sequence token
    model.model.generation_config.eos_token_id = eos
    try:
        ours = decodelab.generate(model, [3, 17, 5, 9], max_new_tokens=30)
        ref = model.model.generate(torch.tensor([[3, 17, 5, 9]]), attention_mask=torch.ones(1, 4, dtype=torch.long),
                                   max_new_tokens=30, do_sample=False)[0, 4:].tolist()
        assert ours.tokens == ref and ours.tokens[-1] == eos and len(ours.tokens) == free.index(eos) + 1
        assert decodelab.generate(model, [3, 17, 5, 9], max_new_tokens=30, ignore_eos=True).tokens == free
    finally:
        model.model.generation_config.eos_token_id = None


def test_generate_accepts_a_transformers_model_and_tokenizer_objects(tiny_dirs):
    model = decodelab.load(tiny_dirs["gpt2"][0])
    direct = decodelab.generate(model.model, [1, 2, 3], max_new_tokens=8)
    assert direct.tokens == decodelab.generate(model, [1, 2, 3], max_new_tokens=8).tokens
