"""Recipes and their architectures validate themselves; the cards' recipe record is unchanged."""
import dataclasses
import json

import pytest

from decodelab import zoo
from decodelab.errors import DecodeLabError
from decodelab.zoo.recipes import Arch, Recipe

AR, MDLM, CODE = zoo.RECIPES["tasks-ar"], zoo.RECIPES["tasks-mdlm"], zoo.RECIPES["code-target"]
LLAMA = dict(hidden=32, ffn=64, layers=1, heads=2)


@pytest.mark.parametrize("base, change, match", [
    (AR, dict(kind="gpt"), "kind must be one of"),
    (AR, dict(data="web"), "data must be one of"),
    (AR, dict(name=""), "name must be"),
    (AR, dict(arch=dict(LLAMA)), "arch must be an Arch"),
    (AR, dict(arch=Arch(type="modernbert", **LLAMA)), "needs arch type None"),
    (MDLM, dict(arch=Arch(**LLAMA)), "needs arch type 'modernbert' or 'llama-bidirectional'"),
    (AR, dict(arch=Arch(type="llama-bidirectional", **LLAMA)), "needs arch type None"),
    (AR, dict(seq_len=0), "seq_len must be a positive integer"),
    (AR, dict(batch_size=2.0), "batch_size must be a positive integer"),
    (AR, dict(batch_size=True), "batch_size must be a positive integer"),
    (AR, dict(patience=-1), "patience must be an integer >= 0"),
    (AR, dict(eval_windows=0), "eval_windows"),
    (AR, dict(lr=0.0), "lr must be a number in"),
    (AR, dict(weight_decay=-0.1), "weight_decay"),
    (MDLM, dict(t_sampler="sobol"), "t_sampler must be one of"),
    (AR, dict(tasks=("copy", "juggle"), task_weights=None), "unknown tasks \\['juggle'\\]"),
    (AR, dict(tasks=("copy", "copy"), task_weights=None), "distinct task names"),
    (AR, dict(tasks=["copy"], task_weights=None), "tuple"),
    (AR, dict(task_weights=(1, 2)), "task_weights must be a tuple of 11 weights"),
    (AR, dict(tasks=("copy", "sort"), task_weights=(1, 0)), "each task weight"),
    (CODE, dict(tasks=("copy",)), "tasks and task_weights are for data='tasks'"),
    (MDLM, dict(gen_len=0), "needs 0 < gen_len < seq_len"),
    (MDLM, dict(gen_len=64), "needs 0 < gen_len < seq_len"),
    (AR, dict(gen_len=8), "gen_len is the answer canvas"),
])
def test_bad_recipe_is_refused(base, change, match):
    with pytest.raises(DecodeLabError, match=match):
        dataclasses.replace(base, **change)


@pytest.mark.parametrize("arch, match", [
    (dict(LLAMA, hidden=30, heads=4), "hidden \\(30\\) must be divisible by heads \\(4\\)"),
    (dict(LLAMA, layers=0), "layers must be a positive integer"),
    (dict(LLAMA, type="gpt2"), "type must be one of"),
    (dict(LLAMA, dropout=0.1), "Llama \\(type None\\) has none"),
    (dict(LLAMA, type="modernbert", dropout=1.0), "dropout must be a number in"),
    (dict(LLAMA, type="llama-bidirectional", dropout=0.1), "Llama \\(type 'llama-bidirectional'\\) has none"),
    (dict(LLAMA, attn_dropout=-0.1), "attn_dropout"),
])
def test_bad_arch_is_refused(arch, match):
    with pytest.raises(DecodeLabError, match=match):
        Arch(**arch)


def test_recipes_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        Recipe("x", "causal", "code", Arch(**LLAMA))  # noqa
    with pytest.raises(dataclasses.FrozenInstanceError):
        AR.arch.hidden = 64


def test_describe_keeps_the_cards_recipe_record():
    """The card's ``recipe`` of every bundled checkpoint is what describe() gives today
    (older cards lack the fields added since, e.g. t_sampler)."""
    for name in zoo.MODELS:
        d = zoo.RECIPES[name].describe()
        assert json.loads(json.dumps(d)) == d  # plain JSON values
        card = json.loads((zoo.CHECKPOINTS_DIR / name / "card.json").read_text())["recipe"]
        assert {k: d[k] for k in card} == card
    assert zoo.RECIPES["code-target"].describe()["arch"] == {"hidden": 192, "ffn": 512, "layers": 4, "heads": 4}
    assert list(zoo.RECIPES["code-mdlm"].describe()["arch"]) == ["type", "hidden", "ffn", "layers", "heads", "dropout"]
