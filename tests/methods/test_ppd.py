"""PPD: the sparse-tree builder on hand-made accuracy tables, exact greedy equality (zoo model with
its trained prompts and untrained ones, tiny random models with hand-set prompts), a hand-built
ToyLM whose prompt tokens guess right (the guess plumbing: depth d from prompt d of the accepted
node), the sampling distribution, the prompts never reaching the cache, and refusals. (The
registry-wide tests run ppd too: greedy equality on every architecture, the fixed budget, the
sampling distribution.)"""
import dataclasses

import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.methods.ppd import (Prompts, auto_budget, best_paths, build_tree, load_prompts, memory_overhead,
                                  save_prompts)
from decodelab.models import ToyLM
from methods.spec_helpers import (check_converges, equal_to_greedy, one_thread,  # noqa: F401
                                  planted_auto_tree, request)

HAND = [[0.9, 0.05], [0.8, 0.1], [0.5, 0.1]]  # acc[depth][rank]


def test_best_paths_are_best_first_and_prefix_closed():
    # products: [0] 0.9, [0, 0] 0.72, [0, 0, 0] 0.36, [0, 1] 0.09, [0, 0, 1] 0.072, [1] 0.05
    paths, value = best_paths(HAND, 5)
    assert paths == [[0], [0, 0], [0, 0, 0], [0, 1], [0, 0, 1]]
    assert value == pytest.approx(0.9 + 0.72 + 0.36 + 0.09 + 0.072)
    assert best_paths(HAND, 6)[0][-1] == [1]
    assert best_paths(HAND[:1], 5)[0] == [[0], [1]]  # depth 1 holds only two ranks


@pytest.mark.parametrize("budget, paths, prompts", [
    (2, [], 1), (3, [], 1),  # no candidate fits: the root and one prompt token
    (4, [[0]], 1),  # (1 + 1)(1 + 1)
    (6, [[0], [1]], 1),  # p = 1: 2 candidates, 0.95; p = 2 fits 1 candidate, 0.9
    (9, [[0], [0, 0]], 2),  # p = 2: 0.9 + 0.72 = 1.62 beats p = 1's two candidates (0.95) and p = 3's one
    (16, [[0], [0, 0], [0, 0, 0]], 3),  # p = 3: 1.98 beats p = 2's four candidates (1.76)
])
def test_build_tree_under_a_budget(budget, paths, prompts):
    tree = build_tree(HAND, budget)
    assert tree["paths"] == paths and tree["prompts"] == prompts
    assert tree["tokens"] <= budget


def test_auto_budget_follows_the_forward_costs():
    """budget auto: the tree with the most expected tokens per second on the given forward costs.
    Where a forward costs the same for any number of tokens (memory-bound) the largest tree the
    curve covers wins; where every token costs as much as the first, no tree pays and the answer is
    1, plain steps; in between, the tree whose gain outruns its tokens' cost."""
    prompts = Prompts(torch.zeros(3, 4), HAND, {})
    flat = [0.0] + [1.0] * 16
    assert auto_budget(prompts, 100, flat) == 16  # 16 tokens: p = 3, the three-deep chain (1.98)
    linear = [0.0] + [float(n) for n in range(1, 17)]
    assert auto_budget(prompts, 100, linear) == 1  # (1 + E) / tokens never beats a plain step's 1 / 1
    # a step costs 1 + 0.05 per token beyond the first: the 9-token tree (1 + 1.62 in 1.4) beats the
    # 16-token one (1 + 1.98 in 1.75) and the 4-token one (1 + 0.9 in 1.15)
    step = [0.0] + [1.0 + 0.05 * (n - 1) for n in range(1, 17)]
    assert auto_budget(prompts, 100, step) == 9
    assert build_tree(HAND, 9)["tokens"] == 9


def test_auto_takes_plain_steps_where_no_tree_pays(monkeypatch):
    """On a curve where every token costs as much as the first, budget auto forwards no prompt
    tokens (one target token scored per committed token) and keeps greedy's output; on a flat one
    it drafts."""
    linear = [0.0] + [float(n) for n in range(1, 17)]
    scored, steps = planted_auto_tree("ppd", linear, monkeypatch, embeddings="init")
    assert scored == steps == 40
    scored, steps = planted_auto_tree("ppd", [0.0] + [1.0] * 16, monkeypatch, embeddings="init")
    assert scored > 4 * steps


def _cycle_toy(scale: float = 6.0) -> ToyLM:
    """Order 2 over 9 tokens: tokens 0..5 continue the cycle y -> y + 1 (mod 6) whatever came before;
    the 'prompt' tokens 6, 7, 8 after token a point 2, 3, 4 steps ahead of a. Prompt embeddings
    one-hot at 6, 7, 8 therefore guess every depth right (a prompt token's prev2 is the node it
    follows: PPD names prompt rows after their node)."""
    t = torch.zeros(9, 9, 9)
    for y in range(6):
        t[:, y, (y + 1) % 6] = scale
    for a in range(6):
        for k, ahead in zip((6, 7, 8), (2, 3, 4)):
            t[a, k, (a + ahead) % 6] = scale
    return ToyLM(t)


def _prompts_dir(tmp_path, embeds, acc, name="p"):
    out = tmp_path / name
    out.mkdir()
    save_prompts(out, embeds, {"model": "toy", "accuracy": acc, "trees": {}})
    return str(out)


def test_right_guesses_commit_p_plus_one_tokens_per_forward(tmp_path):
    toy = _cycle_toy()
    eye = torch.eye(9)
    d = _prompts_dir(tmp_path, eye[[6, 7, 8]], [[1.0, 0.0]] * 3)
    out = equal_to_greedy("ppd", toy, [0, 1], 25, embeddings=d, budget=16)  # a chain of 3, p = 3
    assert out.tokens[:6] == [2, 3, 4, 5, 0, 1]
    assert out.stats.committed == [1] + [4] * 6  # first step: no guesses yet; then 3 accepted + bonus
    # prompts shifted by one depth guess wrong: nothing is accepted, output unchanged
    wrong = _prompts_dir(tmp_path, eye[[7, 8, 6]], [[1.0, 0.0]] * 3, "wrong")
    bad = equal_to_greedy("ppd", toy, [0, 1], 25, embeddings=wrong, budget=16)
    assert bad.stats.committed == [1] * 25


def test_sampling_distribution_with_hand_set_prompts(tmp_path, one_thread):
    toy = _cycle_toy(scale=3.0)
    d = _prompts_dir(tmp_path, torch.eye(9)[[6, 7, 8]], [[0.6, 0.2, 0.1]] * 3)
    kw = dict(embeddings=d, budget=12, temperature=0.8)
    check_converges("ppd", toy, None, sizes=(100, 600), prompt=(0, 1, 2), gen=4,
                    exact_draft=ToyLM(toy.table.roll(1, dims=-1)), **kw)  # a cycle of step 2
    committed = [c for i in range(40) for c in decodelab.generate(
        toy, [0, 1, 2], "ppd", max_new_tokens=8, do_sample=True, seed=i, ignore_eos=True, **kw).stats.committed]
    assert max(committed) > 2  # guesses were accepted, so the accept path was sampled too


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_greedy_equality_tiny_models_hand_set_prompts(tiny_dirs, tmp_path, arch):
    target = decodelab.load(tiny_dirs[arch][0])
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, target.vocab_size, (10,), generator=g).tolist()
    own = decodelab.generate(target, prompt, max_new_tokens=40, ignore_eos=True).tokens
    emb = target.embed(torch.tensor(own[:3])).float()  # real token embeddings as prompts
    for name, e in (("tok", emb), ("rand", torch.randn(3, emb.shape[1], generator=g))):
        for budget in (4, 9, 16):
            d = _prompts_dir(tmp_path, e, [[0.5, 0.2, 0.1]] * 3, f"{name}{budget}")
            equal_to_greedy("ppd", target, prompt + own + prompt, 32, embeddings=d, budget=budget)


def test_prompt_tokens_never_reach_the_cache(tiny_dirs):
    """After every step the target's cache holds exactly the committed tokens (prompt rows dropped)."""
    from decodelab.loops import speculative
    from decodelab.methods.ppd import PPDConfig, PromptDrafter, resolve_prompts

    target = decodelab.load(tiny_dirs["llama"][0]).fresh()
    prompt = torch.tensor([3, 17, 5, 9, 3, 17, 5, 9])
    req = dataclasses.replace(request(target), prompt=prompt, max_new_tokens=30)
    drafter = PromptDrafter(resolve_prompts(PPDConfig(embeddings="init"), target), 12, target.vocab_size)
    got = []
    for chunk in speculative.decode(req, drafter):
        got += chunk
        # the cache holds the context but the last committed token (the next root)
        assert target.cached_ids.tolist() == prompt.tolist() + got[:-1]
    assert got == decodelab.generate(target, prompt.tolist(), max_new_tokens=30, ignore_eos=True).tokens
    # the tree's shape is built once per depth it is cut to, not once per step as the room left shrinks
    assert 0 in drafter._shapes and drafter.template.depth in drafter._shapes
    assert set(drafter._shapes) <= set(range(drafter.template.depth + 1))


def test_zoo_greedy_equality_trained_and_untrained():
    target = decodelab.load("zoo:code-target")
    prompt = target.tokenizer("def fibonacci(n):\n    ", add_special_tokens=False)["input_ids"]
    equal_to_greedy("ppd", target, prompt, 64)  # budget auto: whatever tree the measured curve favours
    trained = equal_to_greedy("ppd", target, prompt, 64, budget=8)  # a fixed tree: the trained prompts' guesses land
    assert trained.stats.tau > 1.0
    equal_to_greedy("ppd", target, prompt, 32, embeddings="init", budget=8)
    prompts, cfg = load_prompts("code-target-ppd")
    assert cfg["model"] == "zoo:code-target" and prompts.embeds.shape == (3, 192)
    assert memory_overhead(prompts.embeds, target.model) == pytest.approx(576 / 2557632)


def test_zoo_large_target_with_its_trained_prompts():
    """zoo:code-target-l's own prompts (zoo/heads/code-target-l-ppd) are found by name and their
    guesses land, with greedy's output."""
    target = decodelab.load("zoo:code-target-l")
    prompt = target.tokenizer("def fibonacci(n):\n    ", add_special_tokens=False)["input_ids"]
    assert equal_to_greedy("ppd", target, prompt, 48, budget=8).stats.tau > 1.0
    prompts, cfg = load_prompts("code-target-l-ppd")
    assert cfg["model"] == "zoo:code-target-l" and prompts.embeds.shape == (3, 576)


def test_refusals(tmp_path, tiny_dirs):
    class NoEmbeds(ToyLM):
        capabilities = frozenset({"tree_mask", "batch", "rewind"})

    with pytest.raises(DecodeLabError, match="needs model capability embeds"):
        decodelab.generate(NoEmbeds.random(6), [1, 2], "ppd", embeddings="init")
    with pytest.raises(DecodeLabError, match="finds its trained embeddings by the target.s zoo name"):
        decodelab.generate(ToyLM.random(6), [1, 2], "ppd")
    tiny = decodelab.load(tiny_dirs["llama"][0])
    with pytest.raises(DecodeLabError, match="no ppd prompt embeddings at 'llama-target-ppd'.*decodelab train ppd"):
        decodelab.generate(tiny, [1, 2], "ppd")
    d = _prompts_dir(tmp_path, torch.zeros(3, 7), [[0.5]] * 3)
    with pytest.raises(DecodeLabError, match="hidden size 7, the target's is 32"):
        decodelab.generate(tiny, [1, 2], "ppd", embeddings=d)
    (tmp_path / "p" / "config.json").write_text('{"kind": "learn2pd-filter"}')
    with pytest.raises(DecodeLabError, match="unusable: config.json is not ppd prompts'"):
        decodelab.generate(tiny, [1, 2], "ppd", embeddings=d)
    with pytest.raises(DecodeLabError, match="budget"):
        decodelab.generate(tiny, [1, 2], "ppd", embeddings="init", budget=1)


@pytest.mark.parametrize("order", [1, 2])
def test_toy_embeddings_of_tokens_score_as_the_tokens(order):
    """ToyLM's "embeds" (one-hot rows; the distribution tests' prompt tokens): a token's own
    embedding scores exactly as the token, in chains and trees."""
    toy = ToyLM.random(7, order=order, seed=3)
    tree = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]])
    ids = torch.tensor([4, 2, 6, 0])
    for mask in (None, tree.bool()):
        a, b = toy.fresh(), toy.fresh()
        a.forward(torch.tensor([3, 5]), torch.arange(2))
        b.forward(torch.tensor([3, 5]), torch.arange(2))
        want = a.forward(ids, torch.arange(2, 6), tree_mask=mask).logits
        got = b.forward(ids, torch.arange(2, 6), tree_mask=mask, embeds=toy.embed(ids)).logits
        assert torch.equal(got, want)
