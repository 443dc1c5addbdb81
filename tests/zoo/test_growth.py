"""zoo.growth: a grown model computes its source's function (exactly without noise), its extra
layers start as identities, the noise breaks the copies' symmetry, and bad shapes are refused."""
import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from decodelab.errors import DecodeLabError
from decodelab.zoo.growth import grow, insert_after


def _llama(hidden, ffn, layers, heads, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=61, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kw.pop("kv", heads),
                      max_position_embeddings=64, tie_word_embeddings=kw.pop("tied", True), **kw)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1 so that their tiling and the final /k are exercised
        for name, p in m.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return m


def test_insert_after_spreads_the_extra_layers():
    assert insert_after(4, 2) == [1, 3]
    assert insert_after(4, 1) == [3]
    assert insert_after(2, 3) == [-1, 0, 1]


@pytest.mark.parametrize("layers", [2, 4, 5])
def test_noise_free_growth_is_the_same_function(layers):
    src = _llama(16, 24, 2, 2)
    dst = grow(src, _llama(48, 48, layers, 6, seed=1), noise=0.0).eval()
    ids = torch.randint(0, 61, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = src(ids).logits, dst(ids).logits
    assert float((a - b).abs().max()) < 1e-4 * float(a.abs().max())
    # the KV-cached greedy path is the same too
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(src.generate(ids[:1, :8], **kw), dst.generate(ids[:1, :8], **kw))


def test_extra_layers_start_as_identities_and_copies_carry_noise():
    src = _llama(16, 24, 2, 2)
    dst = grow(src, _llama(32, 48, 3, 4, seed=1), noise=0.01)
    new = dst.model.layers[2]  # insert_after(2, 1) == [1]: after the last source layer
    assert not new.self_attn.o_proj.weight.any() and not new.mlp.down_proj.weight.any()
    assert new.self_attn.q_proj.weight.any()  # the rest keeps its fresh initialisation
    q = dst.model.layers[0].self_attn.q_proj.weight.detach()
    copy_a, copy_b = q[:16, :16], q[16:, 16:]
    assert not torch.equal(copy_a, copy_b)  # symmetry broken
    assert torch.allclose(copy_a, copy_b, atol=0.05 * float(q.abs().max()))
    ids = torch.randint(0, 61, (1, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = src(ids).logits, dst(ids).logits
    assert 0 < float((a - b).abs().max()) < 0.1 * float(a.abs().max())
    assert dst.lm_head.weight is dst.model.embed_tokens.weight


@pytest.mark.parametrize("dst_kw, match", [
    (dict(hidden=40, ffn=48, layers=2, heads=5), "multiple of the source"),
    (dict(hidden=32, ffn=48, layers=2, heads=2), "head_dim must stay"),
    (dict(hidden=32, ffn=36, layers=2, heads=4), "MLP width"),
    (dict(hidden=32, ffn=48, layers=1, heads=4), "fewer layers"),
])
def test_bad_shapes_are_refused(dst_kw, match):
    with pytest.raises(DecodeLabError, match=match):
        grow(_llama(16, 24, 2, 2), _llama(**dst_kw))


@pytest.mark.parametrize("src_kw, match", [(dict(tied=False), "tie"), (dict(kv=1), "GQA")])
def test_unsupported_sources_are_refused(src_kw, match):
    with pytest.raises(DecodeLabError, match=match):
        grow(_llama(16, 24, 2, 2, **src_kw), _llama(32, 48, 2, 4))


def test_recipe_grow_from_is_checked():
    from decodelab.zoo.recipes import RECIPES, Arch

    r = dataclasses.replace(RECIPES["code-target-l"], grow_from="code-target")
    with pytest.raises(DecodeLabError, match="another zoo model"):
        dataclasses.replace(r, grow_from="code-target-l")
    with pytest.raises(DecodeLabError, match="grows a Llama causal LM"):
        dataclasses.replace(RECIPES["code-mdlm"], grow_from="code-target")
    assert "grow_from" not in RECIPES["code-target-l"].describe()  # recipes that start fresh: as before
    assert r.describe()["grow_from"] == "code-target" and r.arch == Arch(hidden=576, ffn=1536, layers=6, heads=12)


def test_an_unknown_source_is_one_clear_error():
    from decodelab.zoo.recipes import RECIPES
    from decodelab.zoo.tokenizer import load_tokenizer
    from decodelab.zoo.training import _initial_model

    r = dataclasses.replace(RECIPES["code-target-l"], grow_from="gpt-5")
    with pytest.raises(DecodeLabError, match="unknown zoo model 'gpt-5'"):
        _initial_model(r, load_tokenizer(), None, seed=0)


def test_training_starts_from_the_grown_zoo_model():
    """A grow_from recipe's first weights: zoo:code-target grown (2x wide, one more layer), whose
    held-out-style loss on a code snippet equals the source's up to the symmetry-breaking noise."""
    from decodelab import zoo
    from decodelab.zoo.modeling import load_checkpoint
    from decodelab.zoo.recipes import RECIPES, Arch
    from decodelab.zoo.tokenizer import load_tokenizer
    from decodelab.zoo.training import _initial_model

    tok = load_tokenizer()
    r = dataclasses.replace(RECIPES["code-target-l"], grow_from="code-target",
                            arch=Arch(hidden=384, ffn=1024, layers=5, heads=8))
    grown = _initial_model(r, tok, None, seed=0).eval()
    src = load_checkpoint(RECIPES["code-target"], zoo.resolve("code-target")).eval()
    ids = tok("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
              return_tensors="pt")["input_ids"]
    with torch.no_grad():
        la, lb = src(ids, labels=ids).loss, grown(ids, labels=ids).loss
    assert grown.config.hidden_size == 384 and len(grown.model.layers) == 5
    assert abs(float(la) - float(lb)) < 0.02
