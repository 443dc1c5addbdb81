"""The llama.cpp adapter against transformers on the same f32 weights: prefill, single steps, chains,
trees (every node against sequential decoding), commit and truncate then continue, fresh()
independence, and the capabilities it declares missing."""
import inspect

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp")

import decodelab  # noqa: E402
from decodelab.core.tree import TokenTree  # noqa: E402
from decodelab.errors import DecodeLabError  # noqa: E402
from decodelab.models import prefill  # noqa: E402
from decodelab.models.llamacpp import LlamaCppLM  # noqa: E402

ATOL = 1e-4


@pytest.fixture(params=["zoo", "llama", "qwen2"])
def pair(request, zoo_models, tiny_gguf):
    """(transformers model, llama.cpp adapter) on the same weights."""
    if request.param == "zoo":
        return zoo_models[0].model, zoo_models[1].fresh()
    src, path = tiny_gguf[request.param]
    return decodelab.load(src).model, LlamaCppLM(path)


def sequential(hf, ids: list[int]) -> torch.Tensor:
    """transformers' logits after each token of ids, one token per forward. [T, V]"""
    from transformers import DynamicCache

    cache = DynamicCache(config=hf.config)
    kw = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    with torch.inference_mode():
        return torch.cat([hf(input_ids=torch.tensor([[t]]), use_cache=True, **{kw: cache}).logits[0].float()
                          for t in ids])


def _ids(n: int, vocab: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n,), generator=g).tolist()


def _random_tree(n: int, vocab: int, seed: int) -> TokenTree:
    g = torch.Generator().manual_seed(seed)
    parents = [-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
    return TokenTree.from_lists(torch.randint(3, vocab, (n,), generator=g).tolist(), parents)


def test_prefill_single_steps_and_chain_match_transformers(pair):
    hf, lm = pair
    ids = _ids(40, lm.vocab_size, 0)
    ref = sequential(hf, ids)
    full = lm.forward(torch.tensor(ids[:30]), torch.arange(30)).logits  # a prefill with every row
    assert full.shape == (30, lm.vocab_size) and lm.cache_len == 30
    assert torch.allclose(full, ref[:30], atol=ATOL)
    for i in range(30, 34):  # single steps
        step = lm.forward(torch.tensor([ids[i]]), torch.tensor([i])).logits
        assert torch.allclose(step[0], ref[i], atol=ATOL)
    chain = lm.forward(torch.tensor(ids[34:40]), torch.arange(34, 40)).logits
    assert torch.allclose(chain, ref[34:40], atol=ATOL)
    assert lm.cached_ids.tolist() == ids and lm.counter.forwards == 6 and lm.counter.tokens == 40


def test_forward_one_is_a_one_token_forward_without_tensors(pair):
    """forward_one (the loops' autoregressive step) equals forward() on one token, keeps the same
    books, and a tree forward, a commit and a truncate continue from it as from forward()."""
    hf, lm = pair
    ids = _ids(30, lm.vocab_size, 2)
    ref = sequential(hf, ids)
    prefill(lm, torch.tensor(ids[:20]))
    for i in range(20, 24):
        x = lm.forward_one(ids[i], i)
        assert isinstance(x, np.ndarray) and x.shape == (1, lm.vocab_size) and x.dtype == np.float32
        assert torch.allclose(torch.from_numpy(x[0]), ref[i], atol=ATOL)
    assert lm.cache_len == 24 and lm.cached_ids.tolist() == ids[:24]
    assert lm.counter.forwards == 4 and lm.counter.tokens == 4
    tree = TokenTree.from_lists(ids[24:27] + [ids[25]], [-1, 0, 1, 0])
    lm.forward(tree.tokens, tree.positions(24), tree_mask=tree.attention_mask)
    lm.commit([0, 1, 2])
    x = lm.forward_one(ids[27], 27)  # after a tree forward: back in sequence 0
    assert torch.allclose(torch.from_numpy(x[0]), ref[27], atol=ATOL)
    lm.truncate(26)
    x = lm.forward_one(ids[26], 26)
    assert torch.allclose(torch.from_numpy(x[0]), ref[26], atol=ATOL) and lm.cached_ids.tolist() == ids[:27]


def test_forward_last_and_prefill_compute_the_last_row(pair):
    hf, lm = pair
    ids = _ids(20, lm.vocab_size, 1)
    step = prefill(lm, torch.tensor(ids))
    assert step.logits.shape == (1, lm.vocab_size)
    assert torch.allclose(step.logits[0], sequential(hf, ids)[-1], atol=ATOL)
    assert lm.counter.prefill_forwards == 1 and lm.counter.forwards == 0 and lm.cache_len == 20


@pytest.mark.parametrize("seed", [0, 1])
def test_tree_nodes_match_sequential_decoding_and_commit_continues(pair, seed):
    hf, lm = pair
    prompt = _ids(12, lm.vocab_size, seed + 10)
    tree = _random_tree(16, lm.vocab_size, seed)
    tree = TokenTree(torch.cat([torch.tensor([prompt[-1]]), tree.tokens[1:]]), tree.parents)
    prefill(lm, torch.tensor(prompt[:-1]))
    step = lm.forward(tree.tokens, tree.positions(len(prompt) - 1), tree_mask=tree.attention_mask)
    assert step.logits.shape == (16, lm.vocab_size)
    for path in tree.paths():
        ref = sequential(hf, prompt[:-1] + tree.tokens[path].tolist())[len(prompt) - 1:]
        assert torch.allclose(step.logits[path], ref, atol=ATOL), path
    path = max(tree.paths(), key=len)
    lm.commit(path)
    committed = prompt[:-1] + tree.tokens[path].tolist()
    assert lm.cached_ids.tolist() == committed and lm.cache_len == len(committed)
    nxt = lm.forward(torch.tensor([5, 7]), torch.arange(len(committed), len(committed) + 2)).logits
    assert torch.allclose(nxt, sequential(hf, committed + [5, 7])[-2:], atol=ATOL)


@pytest.mark.parametrize("parents, keep", [
    ([-1, 0, 1, 2, 3], [0, 1, 2]),  # a chain, a prefix kept
    ([-1, 0, 0, 2, 1], [0, 2, 3]),  # a tree path that skips node 1
    ([-1, 0, 0, 2, 1], [0, 1, 4]),  # the other branch
    ([-1, 0, 1, 2, 3], [0]),  # nothing accepted
    ([-1, 0, 0, 2, 1], []),  # not even the root
])
def test_commit_then_continue_matches_sequential(pair, parents, keep):
    hf, lm = pair
    prompt = _ids(10, lm.vocab_size, 3)
    tree = TokenTree.from_lists([prompt[-1], 11, 12, 13, 14], parents)
    prefill(lm, torch.tensor(prompt[:-1]))
    lm.forward(tree.tokens, tree.positions(len(prompt) - 1),
               tree_mask=None if tree.is_chain else tree.attention_mask)
    lm.commit(keep)
    committed = prompt[:-1] + tree.tokens[keep].tolist()
    assert lm.cached_ids.tolist() == committed and lm.cache_len == len(committed)
    nxt = lm.forward(torch.tensor([3, 4]), torch.arange(len(committed), len(committed) + 2)).logits
    assert torch.allclose(nxt, sequential(hf, committed + [3, 4])[-2:], atol=ATOL)


def test_forest_forward_of_a_draft_tree(pair):
    """A draft model scores a tree without its root (loops.drafting.score_tree): several top nodes,
    each attending to the cache; commit keeps a path from a top node."""
    hf, lm = pair
    prompt = _ids(9, lm.vocab_size, 4)
    tree = TokenTree.from_lists([prompt[-1], 21, 22, 23, 24, 25], [-1, 0, 0, 1, 3, 2])
    prefill(lm, torch.tensor(prompt))
    step = lm.forward(tree.tokens[1:], tree.positions(len(prompt) - 1)[1:], tree_mask=tree.attention_mask[1:, 1:])
    for path in tree.paths():
        ref = sequential(hf, prompt + tree.tokens[path[1:]].tolist())[len(prompt):]
        assert torch.allclose(step.logits[[i - 1 for i in path[1:]]], ref, atol=ATOL), path
    lm.commit([0, 2])  # nodes 1 and 3
    assert lm.cached_ids.tolist() == prompt + [21, 23]
    nxt = lm.forward(torch.tensor([24]), torch.tensor([len(prompt) + 2])).logits
    assert torch.allclose(nxt[0], sequential(hf, prompt + [21, 23, 24])[-1], atol=ATOL)
    with pytest.raises(DecodeLabError, match="after a chain forward"):
        lm.commit([1])


def _cells_past(lm, end: int) -> list[int]:
    """The sequences 0..MAX_LEAVES that hold a cell at a position >= end (leaked tree nodes)."""
    from decodelab.models.llamacpp import MAX_LEAVES

    return [s for s in range(MAX_LEAVES + 1) if lm._lib.llama_memory_seq_pos_max(lm._mem, s) >= end]


def test_many_steps_of_trees_chains_and_truncates_match_sequential(zoo_models):
    """The committed prefix stays in every leaf sequence used so far (the cache layout): trees of
    growing and shrinking leaf counts, commits of any path prefix (or nothing), chain steps,
    truncates and an uncommitted tree, one after another; every tree node's logits against
    sequential decoding of the cached tokens, and no cell left past the cache's length in any
    sequence."""
    hf, lm = zoo_models[0].model, zoo_models[1].fresh()
    g = torch.Generator().manual_seed(11)

    def rand(hi):
        return int(torch.randint(0, hi, (1,), generator=g))

    ctx = _ids(6, lm.vocab_size, 12)
    prefill(lm, torch.tensor(ctx))
    for step in range(16):
        base = len(ctx)
        kind = step % 4
        if kind == 3:  # a chain of 1-3 tokens, then a truncate of 0-2
            new = _ids(1 + rand(3), lm.vocab_size, 100 + step)
            out = lm.forward(torch.tensor(new), torch.arange(base, base + len(new))).logits
            assert torch.allclose(out, sequential(hf, ctx + new)[base:], atol=ATOL), step
            ctx = (ctx + new)[: base + len(new) - rand(3)]
            lm.truncate(len(ctx))
        else:  # a tree of 3-15 nodes (leaf counts up and down)
            tree = _random_tree([3, 12, 6][kind] + rand(4), lm.vocab_size, 200 + step)
            out = lm.forward(tree.tokens, tree.positions(base), tree_mask=tree.attention_mask).logits
            for path in tree.paths():
                ref = sequential(hf, ctx + tree.tokens[path].tolist())[base:]
                assert torch.allclose(out[path], ref, atol=ATOL), (step, path)
            if step == 5:  # not committed: the next forward drops it
                continue
            path = tree.paths()[rand(len(tree.paths()))]
            path = path[: rand(len(path) + 1)]  # a prefix of a path, possibly empty
            lm.commit(path)
            ctx = ctx + tree.tokens[path].tolist()
        assert lm.cached_ids.tolist() == ctx and lm.cache_len == len(ctx)
        assert _cells_past(lm, len(ctx)) == [], step
    assert lm._tags >= 8  # trees of up to 15 nodes had that many leaves: the layout was exercised
    nxt = lm.forward(torch.tensor([5]), torch.tensor([len(ctx)])).logits
    assert torch.allclose(nxt[0], sequential(hf, ctx + [5])[-1], atol=ATOL)


@pytest.mark.parametrize("keep", [3, 17])
def test_truncate_then_continue(pair, keep):
    hf, lm = pair
    ids = _ids(20, lm.vocab_size, 5)
    prefill(lm, torch.tensor(ids))
    lm.truncate(keep)
    assert lm.cache_len == keep and lm.cached_ids.tolist() == ids[:keep]
    new = [7, 8, 9, 10]
    out = lm.forward(torch.tensor(new), torch.arange(keep, keep + 4)).logits
    assert torch.allclose(out, sequential(hf, ids[:keep] + new)[keep:], atol=ATOL)


def test_truncate_after_a_tree_keeps_only_a_path(pair):
    hf, lm = pair
    prompt = _ids(8, lm.vocab_size, 6)
    tree = TokenTree.from_lists([prompt[-1], 11, 12, 13], [-1, 0, 1, 0])
    prefill(lm, torch.tensor(prompt[:-1]))
    lm.forward(tree.tokens, tree.positions(7), tree_mask=tree.attention_mask)
    lm.truncate(7 + 2)  # root and node 1: a path
    assert lm.cached_ids.tolist() == prompt + [11]
    nxt = lm.forward(torch.tensor([3]), torch.tensor([9])).logits  # chain forwards continue from there
    assert torch.allclose(nxt[0], sequential(hf, prompt + [11, 3])[-1], atol=ATOL)
    lm.truncate(7)
    lm.forward(tree.tokens, tree.positions(7), tree_mask=tree.attention_mask)
    with pytest.raises(DecodeLabError, match="along a path"):
        lm.truncate(7 + 4)
    lm.truncate(5)
    nxt = lm.forward(torch.tensor([3]), torch.tensor([5])).logits
    assert torch.allclose(nxt[0], sequential(hf, prompt[:5] + [3])[-1], atol=ATOL)


def test_fresh_generations_are_independent(pair):
    hf, lm = pair
    a, b = _ids(10, lm.vocab_size, 7), _ids(12, lm.vocab_size, 8)
    prefill(lm, torch.tensor(a[:-1]))
    other = lm.fresh()
    assert other.weights is lm.weights and other.cache_len == 0 and other.counter.prefill_forwards == 0
    out_b = other.forward(torch.tensor(b), torch.arange(12)).logits
    out_a = lm.forward(torch.tensor(a[-1:]), torch.tensor([9])).logits
    assert torch.allclose(out_b, sequential(hf, b), atol=ATOL)
    assert torch.allclose(out_a[0], sequential(hf, a)[-1], atol=ATOL)
    assert lm.counter.forwards == 1 and other.counter.forwards == 1


def test_missing_capabilities_are_refused_up_front(zoo_models):
    _, lm, draft = zoo_models
    assert lm.capabilities == {"tree_mask", "rewind"}
    with pytest.raises(DecodeLabError, match="no hidden states"):
        lm.forward(torch.tensor([1]), torch.tensor([0]), hidden=True)
    for method, capability in [("beam", "batch"), ("superposed", "embeds")]:
        with pytest.raises(DecodeLabError, match=f"needs model capability {capability}, which LlamaCppLM"):
            decodelab.generate(lm, "def f(", method)
    with pytest.raises(DecodeLabError, match="hidden states"):
        decodelab.generate(lm, "def f(", "specdecpp", draft=draft)  # its acceptance head reads the draft's


def test_context_overflow_is_an_error(zoo_models):
    lm = zoo_models[1].fresh()
    with pytest.raises(DecodeLabError, match="exceeds the model's context"):
        decodelab.generate(lm, [5] * (lm.max_length - 6), max_new_tokens=10)
    with pytest.raises(DecodeLabError, match="tokens exceed the llama.cpp context"):
        lm.forward(torch.full((lm.max_length + 300,), 5), torch.arange(lm.max_length + 300))
    assert lm.cache_len == 0


def test_chain_only_context_for_methods_without_trees(pair):
    """fresh(needs) without "tree_mask" gives a one-sequence context (chains only, cheaper per
    step): the same logits for chains and commits, a tree forward refused with a clear message;
    decodelab.generate asks for it by the method's needs."""
    hf, lm = pair
    chain = lm.fresh(needs=frozenset({"rewind"}))
    assert not chain.trees and chain.fresh().trees is False and chain.fresh(needs=frozenset({"tree_mask"})).trees
    ids = _ids(12, lm.vocab_size, 3)
    prefill(chain, torch.tensor(ids[:5]))
    out = chain.forward(torch.tensor(ids[5:9]), torch.arange(5, 9)).logits
    chain.commit([0, 1])
    nxt = chain.forward(torch.tensor(ids[7:12]), torch.arange(7, 12)).logits
    ref = sequential(hf, ids)
    assert torch.allclose(out, ref[5:9], atol=ATOL) and torch.allclose(nxt, ref[7:12], atol=ATOL)
    tree = _random_tree(6, lm.vocab_size, 1)
    with pytest.raises(DecodeLabError, match="no room for tree forwards"):
        chain.forward(tree.tokens, tree.positions(12), tree_mask=tree.attention_mask)
    assert chain.cache_len == 12


def test_generate_sizes_the_context_by_the_method(zoo_models, monkeypatch):
    lm = zoo_models[1]
    made = []
    real = LlamaCppLM.fresh

    def spy(self, needs=None):
        other = real(self, needs)
        made.append(other.trees)
        return other

    monkeypatch.setattr(LlamaCppLM, "fresh", spy)
    decodelab.generate(lm, "def f(", "greedy", max_new_tokens=4)
    decodelab.generate(lm, "def f(", "token_recycling", max_new_tokens=4, template="top4")  # auto: its cost curve makes a context too
    assert made == [False, True]


def test_a_cost_curve_is_cached_per_llama_cpp_build(tmp_path, monkeypatch, zoo_gguf):
    """The llama.cpp build is part of the weights' cache key: a cost curve cached under one build is
    read by the next process on it, and measured again under another (another llama-cpp-python
    version, or the same compiled with other flags, runs its forwards at other costs)."""
    from decodelab.models import costs, llamacpp

    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path))
    measured = []
    # 1e-9 s: no real forward runs faster, so the cached curve is never measured again as "quieter"
    monkeypatch.setattr(costs, "measure", lambda lm, n: measured.append(n) or {"seconds": [0.0] + [1e-9] * n})
    assert llamacpp.build().startswith("llama-cpp-python ") and llamacpp.build() == llamacpp.build()
    costs.curve(LlamaCppLM(zoo_gguf["code-draft"]), n_max=4)
    costs.curve(LlamaCppLM(zoo_gguf["code-draft"]), n_max=4)
    assert measured == [4]
    monkeypatch.setattr(llamacpp, "build", lambda: "llama-cpp-python 0.3.36 another-build")
    costs.curve(LlamaCppLM(zoo_gguf["code-draft"]), n_max=4)
    assert measured == [4, 4] and len(list((tmp_path / "costs").glob("*.json"))) == 2
