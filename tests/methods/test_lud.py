"""LUD (methods/lud.py, train/lud.py): the unit finder and the data reconfiguration on hand-made
confidences, the lossy mode's emitted tokens on a hand-built model, lossless mode equal to the
target's greedy on the zoo pair and exact when sampling with the confidence-restricted q, the recipe
end to end on a tiny budget, refusals. (Greedy equality on every tiny architecture and the sampling
distribution with the default options come from the registry-wide tests.)"""
import json

import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.methods.lud import span
from decodelab.models import ToyLM
from decodelab.train.lud import LUDRecipe, find_units, reconfigure
from methods.spec_helpers import equal_to_greedy, one_thread  # noqa: F401

P = 5  # the placeholder of the hand-built models (vocabulary 0..5)


def test_span_is_the_leading_confident_run_and_at_least_one():
    assert span(torch.tensor([0.95, 0.91, 0.3, 0.99]), 0.9) == 2
    assert span(torch.tensor([0.2, 0.99, 0.99]), 0.9) == 1  # the first token is always emitted
    assert span(torch.tensor([0.95, 0.95, 0.95]), 0.9) == 3
    assert span(torch.tensor([0.1, 0.1]), 0.0) == 2  # beta 0: everything


def test_find_units_on_hand_made_confidences():
    # t:            0    1    2    3    4    5    6    7    8    9   10
    conf = torch.tensor([1.0, 0.2, 0.95, 0.97, 0.3, 0.99, 0.5, 0.92, 0.93, 0.94, 0.96])
    assert find_units(conf, 0.9, 6) == [(2, 2), (7, 4)]  # conf[0] ignored; the lone 0.99 at 5 is no unit
    assert find_units(conf, 0.9, 3) == [(2, 2), (7, 3)]  # a run longer than the lookahead is cut; 1-token rest dropped
    assert find_units(conf, 0.9, 2) == [(2, 2), (7, 2), (9, 2)]
    assert find_units(conf, 0.4, 6) == [(2, 2), (5, 6)]
    assert find_units(torch.tensor([1.0, 0.1, 0.1]), 0.9, 4) == []


def test_reconfigure_hides_the_inner_tokens_of_each_unit():
    w = torch.arange(10, 21)
    out = reconfigure(w, [(2, 2), (7, 4)], placeholder=0)
    assert out.tolist() == [10, 11, 0, 13, 14, 15, 16, 0, 0, 0, 20]  # each unit's last token stays real
    assert w.tolist() == list(range(10, 21))  # input untouched


def _hand_built() -> ToyLM:
    """Order-1 table: after 1 -> 2 (p ~ 0.9997), after 3 -> 4 (~0.9997), after the placeholder 5 -> 3
    (p ~ 0.71), everything else -> 0 (p ~ 0.92)."""
    table = torch.zeros(6, 6)
    table[:, 0] = 4.0
    table[1] = torch.tensor([0, 0, 10.0, 0, 0, 0])
    table[3] = torch.tensor([0, 0, 0, 0, 10.0, 0])
    table[P] = torch.tensor([0, 0, 0, 2.5, 0, 0])
    return ToyLM(table)


def test_lossy_emits_the_confident_prefix_of_each_unit():
    lud, target = _hand_built(), ToyLM.random(6)
    # step 1 forwards [1, P, P]: 2 (0.9997), 3 (0.71), 3 (0.71); step 2 forwards [3, P] (2 tokens left): 4, 3
    out = decodelab.generate(target, [0, 1], "lud", draft=lud, max_new_tokens=5, lookahead=3, threshold=0.5,
                             placeholder=P, ignore_eos=True)
    assert out.tokens == [2, 3, 3, 4, 3] and out.stats.committed == [3, 2]
    assert out.stats.target_forwards == 0 and out.stats.draft_forwards == 3  # prefill of [0] + two steps
    strict = decodelab.generate(target, [0, 1], "lud", draft=lud, max_new_tokens=5, lookahead=3, threshold=0.9,
                                placeholder=P, ignore_eos=True)
    # beta 0.9: only the first prediction passes each step, so the placeholder's 3 is never emitted
    assert strict.tokens == [2, 0, 0, 0, 0] and strict.stats.committed == [1] * 5


def test_lossy_keeps_the_placeholders_of_a_units_inner_tokens_in_the_cache():
    from decodelab.methods.lud import LUDConfig, lossy

    lud = _hand_built()
    req = decodelab.Request(target=ToyLM.random(6), prompt=torch.tensor([0, 1]), max_new_tokens=3,
                            sampling=decodelab.SamplingConfig(), stats=decodelab.DecodeStats(), draft=lud)
    steps = list(lossy(req, LUDConfig(lookahead=3, threshold=0.5, placeholder=P)))
    assert steps == [[2, 3, 3]]
    assert lud.cached_ids.tolist() == [0, 1, P, P]  # 2 and the first 3 as placeholders; the last 3 comes next


def test_lossless_equals_greedy_on_the_zoo_pair_with_units_accepted():
    target, lud = decodelab.load("zoo:code-target"), decodelab.load("zoo:code-target-lud")
    prompts = ["def add(a, b):\n    return", "import os\n\n\nclass Path:\n    def __init__(self"]
    committed = []
    for p in prompts:
        out = equal_to_greedy("lud_lossless", target, p, 64, draft=lud)
        committed += out.stats.committed
    assert max(committed) >= 3  # units longer than one token were drafted and accepted


def test_lossless_sampling_exact_with_the_restricted_q(one_thread):
    """The target gives 2 after 1, then 0 or 3 with p = 1/2 each; the hand-built LUD model drafts 2
    from the root and 3 (q = 0.71) from the placeholder, kept at beta = 0.5. Verified with the
    restricted q (one-hot on 3) the second token is 3 with p = 1/2 exactly; with the plain q it
    would be 3 with p = 0.71 * 0.5 / 0.71 + 0.29 * 0.5 + 0.71 * (1 - 0.5 / 0.71) * 0 = 0.645."""
    table = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    table[1] = torch.tensor([0, 0, 30.0, 0, 0, 0])
    table[2] = torch.tensor([0, -30.0, -30.0, 0, -30.0, -30.0])
    target, lud, n = ToyLM(table), _hand_built(), 800
    threes, long_steps = 0, 0
    for seed in range(n):
        out = decodelab.generate(target, [0, 1], "lud_lossless", draft=lud, max_new_tokens=3, lookahead=3,
                                 threshold=0.5, placeholder=P, do_sample=True, seed=seed, ignore_eos=True)
        assert out.tokens[0] == 2
        threes += out.tokens[1] == 3
        long_steps += out.stats.committed[0] >= 3  # y_1 = 2 and the placeholder's 3 both accepted
    assert abs(threes / n - 0.5) < 0.06, threes / n  # 3.4 standard deviations; the plain q is 8 away
    assert long_steps > n / 4

def test_recipe_end_to_end_on_a_tiny_budget(tmp_path):
    from decodelab.train.lud import run
    from decodelab.zoo.batches import code_windows
    from decodelab.zoo.tokenizer import load_tokenizer

    recipe = LUDRecipe(windows=16, seq_len=48, epochs=1, batch_size=8, heldout_windows=4, alpha=0.6, lookahead=4,
                       warmup=2)
    # windows given: tokenizing the whole train split would take half a minute (the CLI draws from it)
    windows = code_windows("heldout", load_tokenizer(), 48, 16)
    out = run("zoo:code-target", tmp_path / "lud", recipe, progress=False, command="test", windows=windows)
    card = json.loads((out / "card.json").read_text())
    assert card["placeholder"] == {"id": 1, "token": "<|pad|>"}
    u = card["heldout_units"]["lud"]
    assert len(u["position_accuracy"]) == 4 and sum(u["length_share"].values()) == pytest.approx(1, abs=1e-3)
    assert all(2 <= int(n) <= 4 for n in u["length_share"])
    assert (out / "loss.png").is_file() and (out / "model.safetensors").is_file()
    assert len((out / "training_log.jsonl").read_text().splitlines()) == 2  # before training + one epoch
    lud = decodelab.load(str(out))
    assert lud.model.config.lud == {"placeholder_id": 1, "lookahead": 4, "alpha": 0.6}
    target = decodelab.load("zoo:code-target")
    equal_to_greedy("lud_lossless", target, "def f(x):\n", 16, draft=lud)


def test_refusals():
    lud, target = _hand_built(), ToyLM.random(6)
    with pytest.raises(DecodeLabError, match="placeholder id 9 is past"):
        decodelab.generate(target, [0, 1], "lud", draft=lud, placeholder=9)
    with pytest.raises(DecodeLabError, match="needs a draft model"):
        decodelab.generate(target, [0, 1], "lud")
    with pytest.raises(DecodeLabError, match="lookahead"):
        decodelab.generate(target, [0, 1], "lud_lossless", draft=lud, lookahead=0)
    with pytest.raises(DecodeLabError, match="threshold"):
        decodelab.generate(target, [0, 1], "lud", draft=lud, threshold=1.5)
    with pytest.raises(DecodeLabError, match="lookahead must be in"):
        LUDRecipe(lookahead=1)
    with pytest.raises(DecodeLabError, match="alpha"):
        LUDRecipe(alpha=1.0)
