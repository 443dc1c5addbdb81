"""The Learn2PD filter recipe: labels from one-position-per-step runs on a hand-checked case,
the features, fitting a learnable signal, the figures, the recipe end to end on a tiny budget
(files, card, the filter usable by the method), and its refusals."""
import json

import pytest
import torch

import decodelab
from decodelab.cli import main
from decodelab.errors import DecodeLabError
from decodelab.train.learn2pd import (Filter, Learn2PDRecipe, default_filter_name, evaluate, features, fit,
                                      load_filter, run, scores, trajectories)
from methods.diffusion_helpers import ScriptedLM, peaked


def test_labels_on_a_hand_checked_run():
    """llada one position per step on 3 positions: forward 0 proposes [2, 3, 4] (0.9, 0.5, 0.6) and
    commits 0; forward 1 proposes [2, 5, 4] (., 0.5, 0.8) and commits 2; forward 2 commits 1 (5).
    The run ends with [2, 5, 4], so position 1's first proposal (3) was not final."""
    script = {0: ([2, 3, 4], [0.9, 0.5, 0.6]), 1: ([2, 5, 4], [0.9, 0.5, 0.8]), 2: ([2, 5, 4], [0.9, 0.7, 0.8])}
    lm = ScriptedLM(lambda n, region: peaked(*script[n]), 3)
    x, y, m = trajectories(lm, [[6]], gen_length=3, block_length=3, progress=False)
    assert torch.allclose(x, torch.tensor([[0.9, 0.5, 0.6], [1.0, 0.5, 0.8], [1.0, 0.7, 1.0]]))
    assert m.tolist() == [[True, True, True], [False, True, True], [False, True, False]]
    assert y[m].tolist() == [True, False, True, True, True, True]


def test_labels_per_block():
    """Blocks of 2: each step's row is its block's; labels compare with that block's final tokens."""
    lm = ScriptedLM(lambda n, region: peaked([2, 3, 4, 5], [0.9, 0.8, 0.7, 0.6]), 4)
    x, y, m = trajectories(lm, [[6]], gen_length=4, block_length=2, progress=False)
    assert x.shape == (4, 2) and torch.allclose(x[2], torch.tensor([0.7, 0.6])) and bool(y[m].all())


def test_features_do_not_modify_their_input():
    conf = torch.tensor([0.3, -float("inf"), 0.8], dtype=torch.float64)
    masked = torch.tensor([True, False, True])
    f = features(conf, masked)
    assert f.dtype == torch.float32 and f.tolist() == pytest.approx([0.3, 1.0, 0.8]) and conf[1] == -float("inf")


def test_fit_learns_a_signal_and_the_figures():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3000, 4, generator=g)
    y = x > 0.5  # "final" exactly when confident
    m = torch.rand(3000, 4, generator=g) < 0.7
    f = fit(x[:2000], y[:2000], m[:2000], Learn2PDRecipe(epochs=40, hidden=16, lr=1e-2), progress=False)
    ev = evaluate(f, x[2000:], y[2000:], m[2000:], 0.5)
    assert ev["precision"] > 0.9 and ev["recall"] > 0.9 and ev["positions"] == int(m[2000:].sum())
    assert set(ev["confidence_0.9"]) == {"precision", "recall", "accuracy", "positive_rate"}
    s = scores(torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False]))
    assert s == {"precision": 0.5, "recall": 0.5, "accuracy": 0.5, "positive_rate": 0.5}
    assert scores(torch.tensor([False]), torch.tensor([True]))["precision"] is None


def test_save_load_round_trip(tmp_path):
    f = Filter(6, hidden=4)
    f.save(tmp_path, {"model": "m"})
    back, cfg = load_filter(tmp_path)
    x = torch.rand(2, 6)
    assert torch.equal(back.p_final(x), f.p_final(x)) and cfg["block_length"] == 6 and cfg["model"] == "m"
    assert sum(p.numel() for p in Filter(32).parameters()) == 2112  # the paper's ~2K at blocks of 32


def test_default_names():
    assert default_filter_name("tasks-mdlm", None) == "tasks-mdlm-learn2pd"
    assert default_filter_name("tasks-mdlm-llama", 8) == "tasks-mdlm-llama-learn2pd-b8"


def test_the_recipe_end_to_end_on_a_tiny_budget(tmp_path):
    recipe = Learn2PDRecipe(prompts=2, heldout_prompts=1, epochs=3, decode_prompts=1, block_length=8)
    out = run("zoo:tasks-mdlm", tmp_path / "f", recipe, progress=False, command="decodelab train learn2pd ...")
    names = {p.name for p in out.iterdir()}
    assert names == {"model.safetensors", "config.json", "card.json", "training_log.jsonl", "loss.png"}
    card = json.loads((out / "card.json").read_text())
    assert card["block_length"] == 8 and card["model"] == "zoo:tasks-mdlm" and card["command"]
    assert card["train_steps"] == 2 * 24 and card["recipe"]["prompts"] == 2  # one step per position
    for key in ("precision", "recall", "accuracy", "positive_rate", "bce", "confidence_0.9"):
        assert key in card["heldout"]
    assert set(card["decode_figures"]) == {"learn2pd", "llada", "fast_dllm", "prompts"}
    assert len((out / "training_log.jsonl").read_text().splitlines()) == 3
    lm = decodelab.load("zoo:tasks-mdlm")
    got = decodelab.generate(lm, "copy: Ann, Bob =>", "learn2pd", max_new_tokens=24, filter=str(out))
    assert got.stats.nfe >= 1 and len(got.tokens) >= 1


@pytest.mark.parametrize("model, match", [
    ("zoo:nope", "unknown zoo model 'nope'"),
    ("zoo:tasks-ar", "for masked diffusion LMs; zoo:tasks-ar is a causal LM"),
    ("zoo:code-mdlm", "draws its prompts from the zoo task suites"),
])
def test_bad_models_are_refused_and_nothing_is_written(model, match, tmp_path):
    with pytest.raises(DecodeLabError, match=match):
        run(model, tmp_path / "f", Learn2PDRecipe(prompts=1, heldout_prompts=1), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw, match", [
    (dict(threshold=1.5), "threshold must be in \\(0, 1\\)"),
    (dict(block_length=5), "block_length \\(5\\) must divide gen_length \\(24\\)"),
    (dict(prompts=0), "counts must be positive"),
])
def test_bad_recipes_are_refused(kw, match):
    with pytest.raises(DecodeLabError, match=match):
        Learn2PDRecipe(**kw)


def test_the_command_refuses_with_one_message(tmp_path, capsys):
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    assert main(["train", "learn2pd", "--model", "zoo:tasks-mdlm", "--threshold", "1.5", "--out", str(tmp_path)]) != 0
    assert "threshold must be in (0, 1)" in capsys.readouterr().err
    assert main(["train", "learn2pd", "--model", "zoo:tasks-mdlm", "--out", str(tmp_path)]) != 0
    assert "holds no zoo checkpoint" in capsys.readouterr().err and keep.read_text() == "mine"
