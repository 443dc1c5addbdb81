"""The transformers adapter: tree forwards, cache commit/truncate, batched rows, loading."""
import pytest
import torch

import decodelab
from decodelab.core.tree import TokenTree
from decodelab.errors import DecodeLabError
from decodelab.models import HFCausalLM, prefill

from conftest import ARCHS, make_tiny


def _sequential_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits after each token of ids, decoding one token at a time from an empty cache. [T, V]"""
    model.reset()
    return torch.stack([model.forward(torch.tensor([t]), torch.tensor([i])).logits[-1] for i, t in enumerate(ids)])


def _random_tree(n: int, vocab: int, seed: int) -> TokenTree:
    g = torch.Generator().manual_seed(seed)
    parents = [-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
    return TokenTree.from_lists(torch.randint(0, vocab, (n,), generator=g).tolist(), parents)


@pytest.mark.parametrize("arch", ARCHS)
def test_tree_forward_matches_sequential_paths_and_commit_continues(arch):
    model = HFCausalLM(make_tiny(arch))
    prompt = [5, 9, 2, 7, 1]
    tree = _random_tree(12, model.vocab_size, seed=3)
    tree = TokenTree(torch.cat([torch.tensor([prompt[-1]]), tree.tokens[1:]]), tree.parents)
    model.reset()
    prefill(model, torch.tensor(prompt[:-1]))
    step = model.forward(tree.tokens, tree.positions(len(prompt) - 1), tree_mask=tree.attention_mask)
    seq = HFCausalLM(model.model)
    for path in tree.paths():
        ids = prompt[:-1] + tree.tokens[path].tolist()
        ref = _sequential_logits(seq, ids)[len(prompt) - 1:]
        assert torch.allclose(step.logits[path], ref, atol=1e-4), path
    # keep one path; the cache must then continue exactly like a sequential cache
    path = max(tree.paths(), key=len)
    model.commit(path)
    committed = prompt[:-1] + tree.tokens[path].tolist()
    assert model.cached_ids.tolist() == committed
    nxt = model.forward(torch.tensor([3, 4]), torch.arange(len(committed), len(committed) + 2)).logits
    ref = _sequential_logits(seq, committed + [3, 4])[-2:]
    assert torch.allclose(nxt, ref, atol=1e-4)


@pytest.mark.parametrize("parents, keep", [
    ([-1, 0, 1, 2, 3], [0, 1, 2]),  # a chain, its first three nodes kept: the prefix fast path
    ([-1, 0, 0, 2, 1], [0, 2, 3]),  # a tree path that skips node 1: rows are moved
    ([-1, 0, 1, 2, 3], [0]),  # nothing accepted
])
def test_commit_then_continue_matches_sequential(parents, keep):
    model = HFCausalLM(make_tiny("llama"))
    prompt = [5, 9, 2, 7]
    tree = TokenTree.from_lists([7, 11, 12, 13, 14], parents)
    prefill(model, torch.tensor(prompt[:-1]))
    model.forward(tree.tokens, tree.positions(len(prompt) - 1), tree_mask=tree.attention_mask)
    model.commit(keep)
    committed = prompt[:-1] + tree.tokens[keep].tolist()
    assert model.cached_ids.tolist() == committed and model.cache_len == len(committed)
    nxt = model.forward(torch.tensor([3, 4]), torch.arange(len(committed), len(committed) + 2)).logits
    ref = _sequential_logits(HFCausalLM(model.model), committed + [3, 4])[-2:]
    assert torch.allclose(nxt, ref, atol=1e-4)


def test_truncate_then_continue_matches_sequential():
    model = HFCausalLM(make_tiny("llama"))
    ids = [1, 2, 3, 4, 5, 6]
    prefill(model, torch.tensor(ids))
    model.truncate(3)
    assert model.cache_len == 3
    out = model.forward(torch.tensor([8, 9]), torch.tensor([3, 4])).logits
    ref = _sequential_logits(HFCausalLM(model.model), [1, 2, 3, 8, 9])[-2:]
    assert torch.allclose(out, ref, atol=1e-4)


def test_batched_select_repeats_rows():
    model = HFCausalLM(make_tiny("gpt2"))
    prefill(model, torch.tensor([4, 5, 6]))
    model.select(torch.tensor([0, 0]))
    out = model.forward(torch.tensor([[7], [8]]), torch.tensor([[3], [3]])).logits  # [2, 1, V]
    ref = _sequential_logits(HFCausalLM(model.model), [4, 5, 6, 7])[-1]
    ref8 = _sequential_logits(HFCausalLM(model.model), [4, 5, 6, 8])[-1]
    assert torch.allclose(out[0, -1], ref, atol=1e-4) and torch.allclose(out[1, -1], ref8, atol=1e-4)


def test_hidden_states_on_request():
    model = HFCausalLM(make_tiny("qwen2"))
    step = model.forward(torch.tensor([1, 2, 3]), torch.arange(3), hidden=True)
    assert step.hidden.shape == (3, 32) and step.logits.shape == (3, model.vocab_size)


def test_counter_separates_prefill():
    model = HFCausalLM(make_tiny("llama"))
    prefill(model, torch.tensor([1, 2, 3]))
    model.forward(torch.tensor([4, 5]), torch.tensor([3, 4]))
    c = model.counter
    assert (c.prefill_forwards, c.prefill_tokens, c.forwards, c.tokens) == (1, 3, 1, 2)


def test_load_directory_without_tokenizer(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0])
    assert model.tokenizer is None and model.vocab_size == 96 and model.max_length == 512


def test_load_refuses_non_model_paths(tmp_path):
    with pytest.raises(DecodeLabError, match="not a model directory"):
        decodelab.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DecodeLabError, match="not a loadable model"):
        decodelab.load(tmp_path)


def test_load_refuses_missing_weights(tmp_path, tiny_dirs):
    import shutil

    shutil.copy(f"{tiny_dirs['llama'][0]}/config.json", tmp_path / "config.json")
    with pytest.raises(DecodeLabError, match="could not load model weights"):
        decodelab.load(tmp_path)


def test_load_masked_lm_gives_diffusion_adapter_that_causal_methods_refuse(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    from decodelab.models.hf_diffusion import HFDiffusionLM

    words = ["[UNK]", "[MASK]", "<eos>"] + [f"w{i}" for i in range(29)]
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
        {w: i for i, w in enumerate(words)}, unk_token="[UNK]")), mask_token="[MASK]", eos_token="<eos>")
    BertForMaskedLM(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = decodelab.load(tmp_path)
    assert isinstance(model, HFDiffusionLM) and model.mask_id == 1
    with pytest.raises(DecodeLabError, match="masked diffusion LM"):
        decodelab.generate(model, [3, 4], max_new_tokens=2)
