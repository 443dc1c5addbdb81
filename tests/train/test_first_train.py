"""The FiRST router recipe: soft gating equals the base model with every gate 1 and the hard skip
with gates 0; end to end on a tiny budget (files, card, a larger sparsity weight gives lower
gates, the routers usable by the method); refusals."""
import json

import pytest
import torch

import decodelab
from decodelab.cli import main
from decodelab.errors import DecodeLabError
from decodelab.methods.first import Routers, load_routers
from decodelab.train.first import FiRSTRecipe, continuation_loss, default_out, gated, run
from methods.spec_helpers import equal_to_greedy
from models.test_layer_skip import reference_logits


@pytest.fixture
def small_corpus(monkeypatch):
    """The train and held-out streams cut to one corpus file each (tokenizing the whole train split
    takes about a minute)."""
    from decodelab.zoo import batches, corpus

    tok = decodelab.load("zoo:code-target").tokenizer
    for split in ("train", "heldout"):
        text = corpus.read_code(corpus.code_files(split)[0])
        monkeypatch.setitem(batches._CODE_CACHE, split, torch.tensor(tok(text, add_special_tokens=False)["input_ids"]))


def test_gating_is_the_base_model_at_1_and_the_skip_at_0(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0]).model
    x = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(0))
    k = torch.tensor([4, 6])
    routers = Routers(2, 32)
    with torch.no_grad():
        routers.bias[:] = torch.tensor([50.0, -50.0])  # layer 0 kept, layer 1 skipped
        with gated(model, routers, k) as g:
            soft = model(input_ids=x).logits
        with gated(model, routers, k, threshold=0.5):
            hard = model(input_ids=x).logits
    assert float(g[0].min()) == 1.0 and float(g[1].max()) < 1e-20
    for b in range(2):
        want = reference_logits(model, x[b].tolist(), int(k[b]), {1})
        assert torch.allclose(soft[b], want, atol=1e-4) and torch.allclose(hard[b], want, atol=1e-4)
    assert continuation_loss(model, x, k) > 0


def _train(tmp_path, name, sparsity):
    recipe = FiRSTRecipe(sparsity=sparsity, windows=8, seq_len=64, min_prompt=8, min_new=16, batch_size=4,
                         heldout_windows=4, eval_every=1, lr=0.2)
    return run("zoo:code-target", tmp_path / name, recipe, progress=False, command="decodelab train first ...")


def test_the_recipe_end_to_end_on_a_tiny_budget(tmp_path, small_corpus):
    out = _train(tmp_path, "sparse", 20.0)
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "card.json",
                                              "training_log.jsonl", "loss.png"}
    card = json.loads((out / "card.json").read_text())
    assert card["model"] == "zoo:code-target" and card["parameters"] == 4 * 192 + 4 and card["steps"] == 2
    held = card["heldout"]
    assert len(held["skip_rate"]) == 4 and sum(held["skip_sets"].values()) == 4
    assert held["mean_layers_skipped"] == pytest.approx(sum(held["skip_rate"]))
    rows = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    dense = json.loads((_train(tmp_path, "dense", 0.0) / "card.json").read_text())["heldout"]
    assert sum(held["mean_gate"]) < sum(dense["mean_gate"])  # the sparsity weight pushes the gates down
    assert dense["base_loss"] == held["base_loss"]
    routers, cfg = load_routers(out)
    assert cfg["sparsity"] == 20.0 and routers.weight.shape == (4, 192)
    target = decodelab.load("zoo:code-target")
    prompt = target.tokenizer("import os\n", add_special_tokens=False)["input_ids"]
    equal_to_greedy("first", target, prompt, 16, routers=str(out), threshold=0.0)


def test_default_out():
    assert default_out("zoo:code-target", 2.0).name == "code-target-first-2"
    assert default_out("zoo:code-target", 0.5).parent.name == "heads"


@pytest.mark.parametrize("kw, match", [
    (dict(sparsity=-1.0), "sparsity must be >= 0"),
    (dict(windows=0), "counts must be positive"),
    (dict(seq_len=40, min_prompt=16, min_new=32), "min_prompt \\+ min_new must be at most seq_len=40"),
])
def test_bad_recipes_are_refused(kw, match):
    with pytest.raises(DecodeLabError, match=match):
        FiRSTRecipe(**kw)


def test_bad_targets_are_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(DecodeLabError, match="trained on a transformers causal LM"):
        run("zoo:tasks-mdlm", tmp_path / "r", FiRSTRecipe(windows=1), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_command_refuses_with_one_message(tmp_path, capsys):
    assert main(["train", "first", "--target", "zoo:code-target", "--lr", "2", "--out", str(tmp_path / "r")]) != 0
    assert "lr in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_straight_through_runs_hard_gates_with_soft_gradients(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0]).model
    x = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(0))
    k = torch.tensor([4, 6])
    routers = Routers(2, 32)  # untrained: every gate 0.95, rounded to 1
    with gated(model, routers, k, 0.5, straight=True) as g:
        loss = continuation_loss(model, x, k)
    (loss + torch.stack(g).mean()).backward()
    assert all(float(v.detach().min()) == 1.0 for v in g)
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(continuation_loss(model, x, k)), abs=1e-6)  # the base model
    assert float(routers.bias.grad.abs().sum()) > 0 and float(routers.weight.grad.abs().sum()) > 0
