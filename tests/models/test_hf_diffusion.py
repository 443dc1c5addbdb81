"""The masked diffusion adapter: both kinds (encoder; bidirectional decoder with a KV cache) through
one protocol, rows, batches, the caches against a full forward, fresh copies, the loading rule."""
import json

import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.models.base import CausalLM, MaskedDiffusionLM
from decodelab.models.hf_diffusion import HFDiffusionLM, is_masked_diffusion
from methods.diffusion_helpers import tiny_dlm, tiny_lm  # noqa: F401


def test_protocol_and_capabilities(tiny_dlm):
    assert isinstance(tiny_dlm, MaskedDiffusionLM) and not isinstance(tiny_dlm, CausalLM)
    assert tiny_dlm.mask_id == tiny_dlm.tokenizer.mask_token_id
    assert tiny_dlm.eos_token_ids == [tiny_dlm.tokenizer.eos_token_id]
    assert ("kv_cache" in tiny_dlm.capabilities) == tiny_dlm.decoder


def test_rows_batches_and_counts(tiny_dlm):
    lm = tiny_dlm.fresh()
    canvas = torch.tensor([5, 6, 7, lm.mask_id, lm.mask_id, 9])
    full = lm.logits(canvas)  # [6, V]
    assert full.shape == (6, lm.vocab_size) and full.dtype == torch.float32
    assert torch.allclose(lm.logits(canvas, torch.tensor([3, 4])), full[3:5], atol=1e-5)  # the head on 2 rows
    batch = lm.logits(torch.stack([canvas, canvas.flip(0)]), torch.tensor([3, 4]))
    assert torch.allclose(batch[0], full[3:5], atol=1e-5)
    assert lm.counter.forwards == 3 and lm.counter.tokens == 6 + 6 + 12
    assert tiny_dlm.counter.forwards == 0  # fresh(): a counter of its own


def test_attention_is_bidirectional(tiny_dlm):
    canvas = torch.tensor([5, 6, 7, 8])
    a = tiny_dlm.logits(canvas, torch.tensor([0]))
    b = tiny_dlm.logits(torch.tensor([5, 6, 7, 300]), torch.tensor([0]))
    assert not torch.allclose(a, b)  # position 0 sees the last token


@pytest.mark.parametrize("kept, fwd", [("prefix", slice(3, 8)), ("dual", slice(3, 6))])
def test_caches_equal_a_full_forward_on_an_unchanged_canvas(kept, fwd):
    lm = tiny_lm("llama").fresh()
    canvas = torch.tensor([5, 6, 7, lm.mask_id, lm.mask_id, lm.mask_id, 11, 12])
    full = lm.logits(canvas)
    keep = torch.arange(3) if kept == "prefix" else torch.tensor([0, 1, 2, 6, 7])
    first = lm.logits(canvas, torch.arange(3, 6), keep=keep)
    assert torch.allclose(first, full[3:6], atol=1e-5)  # the keeping forward is a full forward
    ids = canvas[fwd]
    for _ in range(2):  # the cache is left as it was: twice the same
        got = lm.logits_cached(ids, torch.arange(fwd.start, fwd.stop), torch.arange(3))
        assert torch.allclose(got, full[3:6], atol=1e-4)
    assert lm.counter.tokens == 8 + 8 + 2 * len(ids)


def test_encoders_keep_nothing():
    lm = tiny_lm("bert")
    with pytest.raises(DecodeLabError, match="no kv_cache"):
        lm.logits(torch.tensor([5, 6, lm.mask_id]), keep=torch.arange(2))


def test_the_loading_rule(tmp_path):
    assert is_masked_diffusion({"architectures": ["ModernBertForMaskedLM"]})
    assert is_masked_diffusion({"architectures": ["LlamaForCausalLM"], "masked_diffusion": True})
    assert not is_masked_diffusion({"architectures": ["LlamaForCausalLM"]})
    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["masked_diffusion"] is True
    loaded = decodelab.load(tmp_path)
    assert isinstance(loaded, HFDiffusionLM) and "kv_cache" in loaded.capabilities
    c = torch.tensor([5, 6, lm.mask_id])
    assert torch.allclose(loaded.logits(c), lm.logits(c), atol=1e-5)
    # plain transformers loads it too; run bidirectionally it needs a full 4D mask
    from transformers import AutoModelForCausalLM

    from decodelab.models.hf_diffusion import bidirectional_mask

    m = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = c[None]
    out = m(input_ids=ids, attention_mask=bidirectional_mask(None, ids, torch.float32)).logits[0]
    assert torch.allclose(out, lm.logits(c), atol=1e-5)


def test_a_transformers_model_is_wrapped_by_kind():
    lm = tiny_lm("bert")
    out = decodelab.generate(lm.model, [5, 6], "llada", tokenizer=lm.tokenizer, max_new_tokens=4, ignore_eos=True)
    assert len(out.tokens) == 4 and out.stats.nfe == 4
    with pytest.raises(DecodeLabError, match="needs a tokenizer with a mask token"):
        decodelab.generate(lm.model, [5, 6], "llada", max_new_tokens=4)
