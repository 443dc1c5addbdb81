"""Registry-wide tests: every registered method gets them without writing its own.

- Every method that claims greedy losslessness equals plain greedy exactly (ids, length and
  per-token log-probabilities) on tiny random models of every architecture in conftest.ALL_ARCHS.
- Every speculative method runs at a fixed target budget B: no target forward scores more than B
  tokens.
- Generations are independent: two streams advanced in turn on one loaded model give what each
  gives alone, for every method.
(Sampling losslessness: test_sampling_registry.py.)
"""
import pytest
import torch

import decodelab
from decodelab.bench.rows import method_kwargs
from decodelab.models import ToyLM
from decodelab.registry import all_methods
from methods.stream_helpers import interleave

# Per-method options the generic tests need: name -> kwargs.
OPTIONS: dict[str, dict] = {"specdecpp": {"head": "none"},  # no trained head fits the tiny drafts
                            "ppd": {"embeddings": "init"},  # no prompt embeddings were trained for them
                            "superposed": {"alpha": 0.0},  # its n-grams need a tokenizer; the tiny models have none
                            # fixed draft sizes: "auto" (their default, tests/core/test_costs.py) may find
                            # drafting unprofitable on tiny models, and these tests must see drafts accepted
                            "sps": {"gamma": 3}, "pld": {"num_tokens": 4}, "token_recycling": {"template": "top4"},
                            "samd": {"num_tokens": 4, "gamma": 3}, "aded": {"budget": 8},
                            "rsd_c": {"branches": "2x1x1"}, "rsd_s": {"depth": 3},
                            # no routers were trained for the tiny models; a fixed skip set so the streams skip
                            "first": {"routers": "init", "skip": "1"}}

# causal-LM methods only: the diffusion family has its own registry-wide tests (test_diffusion_registry.py)
CAUSAL = {name: m for name, m in all_methods().items() if m.family != "diffusion"}
GREEDY_LOSSLESS = sorted(name for name, m in CAUSAL.items()
                         if m.lossless in ("greedy", "sampling") and "greedy" in m.modes and name != "greedy")
SPECULATIVE = sorted(name for name, m in CAUSAL.items() if m.family == "speculative")
GREEDY_MODE = sorted(name for name, m in CAUSAL.items() if "greedy" in m.modes)


def _draft_for(method, draft):
    return draft if all_methods()[method].draft else None


@pytest.mark.parametrize("method", GREEDY_LOSSLESS)
def test_greedy_lossless_methods_equal_greedy(method, any_arch_pair):
    arch, target, draft = any_arch_pair
    spec = all_methods()[method]
    base = [3, 17, 5, 9]
    first = decodelab.generate(target, base, max_new_tokens=24).tokens
    # a prompt that repeats the model's own continuation, so that drafts actually get accepted
    for prompt in (base, base + first + base):
        want = decodelab.generate(target, prompt, max_new_tokens=48, logprobs=True)
        drafts = [draft, target] if spec.draft else [None]
        for d in drafts:
            got = decodelab.generate(target, prompt, method, draft=d, max_new_tokens=48, logprobs=True,
                                     **OPTIONS.get(method, {}))
            assert got.tokens == want.tokens, (method, arch, prompt)
            assert got.stats.new_tokens == len(want.tokens)
            assert got.stats.target_forwards <= want.stats.target_forwards
            assert torch.allclose(torch.tensor(got.logprobs), torch.tensor(want.logprobs), atol=1e-4), (method, arch)


def test_self_drafting_sps_accepts_everything(any_arch_pair):
    _, target, _ = any_arch_pair
    out = decodelab.generate(target, [3, 17, 5, 9], "sps", draft=target, max_new_tokens=30, gamma=4)
    assert out.stats.committed[:-1] == [5] * 5 and out.stats.tau > 4.5


class _Recording(ToyLM):
    """ToyLM that records how many tokens each forward scores (shared by its fresh copies)."""

    sizes: list[int] = []

    def forward(self, ids, positions, tree_mask=None, hidden=False, embeds=None):
        _Recording.sizes.append(ids.shape[-1])
        return super().forward(ids, positions, tree_mask, hidden, embeds)


@pytest.mark.parametrize("budget", [2, 3, 5, 9])
@pytest.mark.parametrize("method", SPECULATIVE)
def test_every_speculative_method_runs_at_a_fixed_budget(method, budget, toy_pair):
    """The method's declared budget rule keeps every target forward at <= B tokens, and a chain
    or tree is actually drafted (some forward scores more than the root)."""
    target, draft = _Recording(toy_pair[0].table), toy_pair[1]
    spec = all_methods()[method]
    fixed = {k: v for k, v in OPTIONS.get(method, {}).items() if k not in spec.budget(budget, {})}  # set by B
    kw = method_kwargs(spec, {"fixed_budget": budget, **fixed})
    prompt = [1, 2, 1, 2, 1, 2, 1, 2]  # repetitive, so the model-free drafters find something
    state = decodelab.State()  # methods that learn draft from the first run in the second
    for _ in range(2):
        _Recording.sizes = []
        out = decodelab.generate(target, prompt, method, draft=_draft_for(method, draft), max_new_tokens=24,
                                 ignore_eos=True, state=state, **kw)
    decode_sizes = _Recording.sizes[1:]  # the first forward is the prefill of prompt[:-1]
    assert max(decode_sizes) <= budget, (method, kw, decode_sizes)
    assert max(decode_sizes) > 1 and out.stats.new_tokens == 24, (method, kw)


@pytest.mark.parametrize("method", GREEDY_MODE)
def test_interleaved_streams_on_one_model_are_independent(method, tiny_dirs):
    """Two generations on one loaded model, advanced in turn, each equal the generation alone: every
    generation has its own KV cache (api.stream runs on fresh adapters)."""
    target, draft = decodelab.load(tiny_dirs["llama"][0]), decodelab.load(tiny_dirs["llama"][1])
    kw = dict(draft=_draft_for(method, draft), max_new_tokens=20, ignore_eos=True, **OPTIONS.get(method, {}))
    prompts = [[3, 17, 5, 9], [42, 7, 7, 1, 30, 2]]
    alone = [decodelab.generate(target, p, method, **kw).tokens for p in prompts]
    streams = [decodelab.stream(target, p, method, **kw) for p in prompts]
    assert interleave(streams) == alone


@pytest.mark.parametrize("method", GREEDY_MODE)
def test_trace_accounts_for_every_token(method, tiny_dirs):
    """generate(trace=True): the steps' tokens are the output; a step's accepted tokens are its draft
    nodes along the accepted path, each the child of the one before; a stop string cuts the trace
    with the output."""
    target = decodelab.load(tiny_dirs["llama"][0])
    # the model drafting for itself, and a prompt that holds its own continuation: drafts get accepted
    kw = dict(draft=_draft_for(method, target), max_new_tokens=30, ignore_eos=True, **OPTIONS.get(method, {}))
    base = [3, 17, 5, 9]
    prompt = base + decodelab.generate(target, base, max_new_tokens=30).tokens + base
    out = decodelab.generate(target, prompt, method, trace=True, **kw)
    assert [t for s in out.trace for t in s.tokens] == out.tokens and len(out.tokens) == 30
    for s in out.trace:
        assert [s.draft[i] for i in s.path][:s.accepted] == s.tokens[:s.accepted]
        assert all(s.parents[b] == a for a, b in zip([-1] + s.path, s.path))
        assert len(s.draft) == len(s.parents) and s.accepted <= len(s.path)
    if all_methods()[method].family == "speculative":
        assert sum(s.accepted for s in out.trace) > 0
