"""The LLaDA-style baseline loop, on a tiny random BERT (no bundled checkpoint needed)."""
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from decodelab.errors import DecodeLabError
from decodelab.loops.diffusion import decode, decode_batch
from decodelab.models.hf_diffusion import HFDiffusionLM
from decodelab.zoo.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def lm():
    tok = load_tokenizer()
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=64, type_vocab_size=1, initializer_range=0.5)
    return HFDiffusionLM(BertForMaskedLM(cfg), tok)


def test_adapter(lm):
    assert lm.mask_id == lm.tokenizer.mask_token_id and lm.eos_id == lm.tokenizer.eos_token_id
    canvas = torch.tensor([5, 6, lm.mask_id, lm.mask_id])
    before = lm.counter.forwards
    out = lm.logits(canvas)
    assert out.shape == (4, lm.vocab_size) and out.dtype == torch.float32
    assert lm.counter.forwards == before + 1


def test_one_token_per_step_fills_every_mask(lm):
    r = decode(lm, [10, 11, 12], gen_length=7)
    assert r.steps == 7 and len(r.canvas) == 7 and lm.mask_id not in r.canvas
    assert sorted(r.order) == list(range(7))
    eos = lm.eos_id
    assert r.ids == (r.canvas[: r.canvas.index(eos)] if eos in r.canvas else r.canvas)


def test_several_tokens_per_step(lm):
    r = decode(lm, [10, 11, 12], gen_length=7, tokens_per_step=3)
    assert r.steps == 3 and lm.mask_id not in r.canvas


def test_commits_most_confident_first(lm):
    prompt = [20, 21, 22, 23]
    r = decode(lm, prompt, gen_length=5)
    canvas = torch.tensor(prompt + [lm.mask_id] * 5)
    probs = torch.softmax(lm.logits(canvas)[len(prompt):], -1)
    assert r.order[0] == int(probs.max(-1).values.argmax())
    assert r.canvas[r.order[0]] == int(probs[r.order[0]].argmax())


def test_batch_equals_one_at_a_time(lm):
    prompts = [[10, 11, 12], [30, 31, 32, 33, 34], [40]]
    batch = decode_batch(lm, prompts, gen_length=6)
    for p, b in zip(prompts, batch):
        assert decode(lm, p, gen_length=6).canvas == b.canvas


def test_bad_arguments(lm):
    with pytest.raises(DecodeLabError):
        decode(lm, [1, 2], gen_length=0)
    with pytest.raises(DecodeLabError):
        decode(lm, [1, 2], gen_length=4, tokens_per_step=0)
    with pytest.raises(DecodeLabError, match="context"):
        decode(lm, [1] * 60, gen_length=10)
