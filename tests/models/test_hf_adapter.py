"""The transformers adapter: tree forwards, cache commit/truncate, batched rows, loading, on every
architecture of conftest (sliding-window ones with windows smaller than the sequences)."""
import inspect

import pytest
import torch
from transformers import DynamicCache

import decodelab
from decodelab.core.tree import TokenTree
from decodelab.errors import DecodeLabError
from decodelab.models import HFCausalLM, prefill

from conftest import ALL_ARCHS, WINDOW, make_tiny

SLIDING = tuple(a for a in ALL_ARCHS if a.endswith(f"-sw{WINDOW}"))


def _sequential_logits(hf, ids: list[int]) -> torch.Tensor:
    """Logits after each token of ids, transformers decoding one token at a time with its own cache
    (whose sliding layers drop the keys that leave the window). hf: a transformers model. [T, V]"""
    cache = DynamicCache(config=hf.config)
    kw = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    with torch.inference_mode():
        return torch.cat([hf(input_ids=torch.tensor([[t]]), use_cache=True, **{kw: cache}).logits[0] for t in ids])


def _random_tree(n: int, vocab: int, seed: int) -> TokenTree:
    g = torch.Generator().manual_seed(seed)
    parents = [-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
    return TokenTree.from_lists(torch.randint(0, vocab, (n,), generator=g).tolist(), parents)


def test_sliding_archs_really_slide():
    """The window is smaller than the test sequences: a wider window changes the logits."""
    for arch in SLIDING:
        model, ids = make_tiny(arch), list(range(3, 3 + 2 * WINDOW))
        narrow = _sequential_logits(model, ids)
        model.config.sliding_window = 4096
        wide = _sequential_logits(model, ids)
        assert torch.allclose(narrow[:WINDOW], wide[:WINDOW], atol=1e-5), arch
        assert not torch.allclose(narrow[WINDOW:], wide[WINDOW:], atol=1e-2), arch


def _two_branches(n: int, vocab: int, seed: int) -> TokenTree:
    """A root with two chains of n nodes each, deeper than the window: tree keys leave it too."""
    g = torch.Generator().manual_seed(seed)
    parents = [-1] + [0] + list(range(1, n)) + [0] + list(range(n + 1, 2 * n))
    return TokenTree.from_lists(torch.randint(0, vocab, (2 * n + 1,), generator=g).tolist(), parents)


@pytest.mark.parametrize("shape", ["random", "deep"])
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_tree_forward_matches_sequential_paths_and_commit_continues(arch, shape):
    model = HFCausalLM(make_tiny(arch))
    prompt = [5, 9, 2, 7, 1, 8, 4, 4, 6, 3, 2, 5]  # longer than the window: cached keys leave it
    make = {"random": lambda: _random_tree(12, model.vocab_size, seed=3),
            "deep": lambda: _two_branches(WINDOW + 2, model.vocab_size, seed=3)}
    tree = make[shape]()
    tree = TokenTree(torch.cat([torch.tensor([prompt[-1]]), tree.tokens[1:]]), tree.parents)
    model.reset()
    prefill(model, torch.tensor(prompt[:-1]))
    step = model.forward(tree.tokens, tree.positions(len(prompt) - 1), tree_mask=tree.attention_mask)
    for path in tree.paths():
        ids = prompt[:-1] + tree.tokens[path].tolist()
        ref = _sequential_logits(model.model, ids)[len(prompt) - 1:]
        assert torch.allclose(step.logits[path], ref, atol=1e-4), path
    # keep one path; the cache must then continue exactly like a sequential cache
    path = max(tree.paths(), key=len)
    model.commit(path)
    committed = prompt[:-1] + tree.tokens[path].tolist()
    assert model.cached_ids.tolist() == committed
    nxt = model.forward(torch.tensor([3, 4]), torch.arange(len(committed), len(committed) + 2)).logits
    ref = _sequential_logits(model.model, committed + [3, 4])[-2:]
    assert torch.allclose(nxt, ref, atol=1e-4)


@pytest.mark.parametrize("parents, keep", [
    ([-1, 0, 1, 2, 3], [0, 1, 2]),  # a chain, its first three nodes kept: the prefix fast path
    ([-1, 0, 0, 2, 1], [0, 2, 3]),  # a tree path that skips node 1: rows are moved
    ([-1, 0, 1, 2, 3], [0]),  # nothing accepted
])
@pytest.mark.parametrize("arch", ("llama",) + SLIDING)
def test_commit_then_continue_matches_sequential(arch, parents, keep):
    model = HFCausalLM(make_tiny(arch))
    prompt = [5, 9, 2, 7, 1, 8, 4, 4, 6, 3]  # longer than the window
    tree = TokenTree.from_lists([3, 11, 12, 13, 14], parents)
    prefill(model, torch.tensor(prompt[:-1]))
    model.forward(tree.tokens, tree.positions(len(prompt) - 1), tree_mask=tree.attention_mask)
    model.commit(keep)
    committed = prompt[:-1] + tree.tokens[keep].tolist()
    assert model.cached_ids.tolist() == committed and model.cache_len == len(committed)
    nxt = model.forward(torch.tensor([3, 4]), torch.arange(len(committed), len(committed) + 2)).logits
    ref = _sequential_logits(model.model, committed + [3, 4])[-2:]
    assert torch.allclose(nxt, ref, atol=1e-4)


@pytest.mark.parametrize("keep", [3, WINDOW + 3])  # cut back inside the window, and past it
@pytest.mark.parametrize("arch", ("llama",) + SLIDING)
def test_truncate_then_continue_matches_sequential(arch, keep):
    model = HFCausalLM(make_tiny(arch))
    ids = list(range(10, 10 + 2 * WINDOW))
    prefill(model, torch.tensor(ids))
    model.truncate(keep)
    assert model.cache_len == keep
    new = list(range(40, 40 + WINDOW + 2))  # continue beyond the window again, in two forwards
    out = torch.cat([model.forward(torch.tensor(new[:3]), torch.arange(keep, keep + 3)).logits,
                     model.forward(torch.tensor(new[3:]), torch.arange(keep + 3, keep + len(new))).logits])
    ref = _sequential_logits(model.model, ids[:keep] + new)[keep:]
    assert torch.allclose(out, ref, atol=1e-4)


def test_batched_select_repeats_rows():
    model = HFCausalLM(make_tiny("gpt2"))
    prefill(model, torch.tensor([4, 5, 6]))
    model.select(torch.tensor([0, 0]))
    out = model.forward(torch.tensor([[7], [8]]), torch.tensor([[3], [3]])).logits  # [2, 1, V]
    ref = _sequential_logits(model.model, [4, 5, 6, 7])[-1]
    ref8 = _sequential_logits(model.model, [4, 5, 6, 8])[-1]
    assert torch.allclose(out[0, -1], ref, atol=1e-4) and torch.allclose(out[1, -1], ref8, atol=1e-4)


def test_hidden_states_on_request():
    model = HFCausalLM(make_tiny("qwen2"))
    step = model.forward(torch.tensor([1, 2, 3]), torch.arange(3), hidden=True)
    assert step.hidden.shape == (3, 32) and step.logits.shape == (3, model.vocab_size)


def test_fresh_shares_weights_not_cache_or_counter():
    model = HFCausalLM(make_tiny("gemma2-sw8"))
    prefill(model, torch.tensor([1, 2, 3]))
    other = model.fresh()
    assert other.model is model.model and other.cache_len == 0 and other.counter.prefill_forwards == 0
    out = other.forward(torch.tensor([1, 2, 3]), torch.arange(3)).logits
    assert model.cache_len == 3 and model.counter.prefill_forwards == 1 and other.counter.forwards == 1
    assert torch.allclose(out, _sequential_logits(model.model, [1, 2, 3]), atol=1e-4)


def test_cache_that_cannot_roll_back_decodes_forward_and_refuses_rollback():
    """Llama 4's chunked-attention layers keep a running cache of their own: greedy runs like
    transformers; speculative methods are refused up front (no "rewind" capability), and a
    rollback asked of the adapter directly raises instead of giving a wrong answer."""
    from transformers import Llama4ForCausalLM, Llama4TextConfig

    torch.manual_seed(0)
    hf = Llama4ForCausalLM(Llama4TextConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, intermediate_size_mlp=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=2, attention_chunk_size=WINDOW,
        max_position_embeddings=512, initializer_range=0.3, bos_token_id=None, eos_token_id=None,
        pad_token_id=None)).eval()
    model, prompt = HFCausalLM(hf), [3, 17, 5, 9, 1, 2, 3]
    ours = decodelab.generate(model, prompt, max_new_tokens=2 * WINDOW).tokens
    ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      max_new_tokens=2 * WINDOW, do_sample=False)[0, len(prompt):].tolist()
    assert ours == ref and not {"tree_mask", "rewind"} & model.capabilities
    prefill(model, torch.tensor(prompt))
    with pytest.raises(DecodeLabError, match="chunked_attention layers, whose cache cannot be rolled back"):
        model.truncate(3)
    for method in ("pld", "sps"):
        with pytest.raises(DecodeLabError, match="needs model capability rewind"):
            decodelab.generate(model, prompt, method, draft=model if method == "sps" else None,
                               max_new_tokens=2 * WINDOW)


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
