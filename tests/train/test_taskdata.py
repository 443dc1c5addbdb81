"""Task data for the lud and first recipes (train/taskdata.py): the rows and their masks, padding
that never counts (lud's loss and units, first's continuation loss), lud's units on the answers
only, first's cut at the prompt/answer split, --data chosen from the target, refusals, and both
recipes end to end on task data at a tiny budget."""
import json
from types import SimpleNamespace

import pytest
import torch

import decodelab
from decodelab.cli import main
from decodelab.errors import DecodeLabError
from decodelab.train import first as first_train
from decodelab.train import lud as lud_train
from decodelab.train.first import FiRSTRecipe, continuation_loss, load_data
from decodelab.train.lud import LUDRecipe, Rows, build, confidences, lm_loss
from decodelab.train.taskdata import default_data, task_rows
from decodelab.zoo.tasks import TASKS


@pytest.fixture(scope="module")
def tasks_ar():
    return decodelab.load("zoo:tasks-ar")


@pytest.fixture(scope="module")
def rows(tasks_ar):
    return task_rows(tasks_ar.tokenizer, "train", 12, seed=0)


def _scribble_padding(ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """The same rows with every padding position set to other (random, non-pad) ids."""
    noise = torch.randint(5, 100, ids.shape, generator=torch.Generator().manual_seed(1))
    return torch.where(attention.bool(), ids, noise)


def test_rows_are_prompt_answer_end_of_text_then_padding(rows, tasks_ar):
    tok = tasks_ar.tokenizer
    t = torch.arange(rows.ids.shape[1])[None, :]
    k, n = rows.prompt_len[:, None], rows.length[:, None]
    assert rows.ids.shape[1] == int(rows.length.max()) and len(set(rows.length.tolist())) > 1  # padded
    assert torch.equal(rows.answer, (t >= k) & (t < n)) and torch.equal(rows.attention.bool(), t < n)
    assert torch.equal(rows.ids[t >= n], torch.full_like(rows.ids[t >= n], tok.pad_token_id))
    for i in range(len(rows)):
        assert tok.decode(rows.ids[i, :k[i, 0]]).endswith("=>")  # the prompt ends where the answer starts
        assert int(rows.ids[i, n[i, 0] - 1]) == tok.eos_token_id
    labels = rows.labels()
    assert torch.equal(labels[rows.answer], rows.ids[rows.answer]) and (labels[~rows.answer] == -100).all()
    held = task_rows(tok, "test", 2, seed=0, per_task=True)
    assert held.tasks == tuple(t for t in TASKS for _ in range(2)) and len(held) == 2 * len(TASKS)


def test_padding_never_counts(rows, tasks_ar):
    model = tasks_ar.model
    scribbled = _scribble_padding(rows.ids, rows.attention)
    assert not torch.equal(scribbled, rows.ids)
    plain, other = Rows.of_tasks(rows), Rows(scribbled, rows.labels(), rows.answer, rows.attention)
    assert lm_loss(model, plain.ids, plain) == pytest.approx(lm_loss(model, other.ids, other), abs=1e-6)
    assert torch.allclose(confidences(model, plain), confidences(model, other), atol=1e-6)
    with torch.no_grad():
        want = continuation_loss(model, rows.ids, rows.prompt_len, rows.length)
        got = continuation_loss(model, scribbled, rows.prompt_len, rows.length)
        assert float(want) == pytest.approx(float(got), abs=1e-6)
        # without the row ends the padding would count
        assert float(continuation_loss(model, scribbled, rows.prompt_len)) != pytest.approx(float(want), abs=1e-3)


class Oracle(torch.nn.Module):
    """A 'model' certain of every next token of its input, prompt and padding included."""

    def forward(self, input_ids, attention_mask=None):
        logits = torch.full((*input_ids.shape, int(input_ids.max()) + 1), -30.0)
        logits[:, :-1].scatter_(-1, input_ids[:, 1:, None], 30.0)
        return SimpleNamespace(logits=logits)


def test_lud_units_lie_on_the_answers_only(rows, tasks_ar):
    pad = tasks_ar.tokenizer.pad_token_id
    inputs, units = build(Oracle(), Rows.of_tasks(rows), LUDRecipe(alpha=0.9, lookahead=4, data="tasks"), pad)
    for i, us in enumerate(units):
        k, n = int(rows.prompt_len[i]), int(rows.length[i])
        # every answer token is certain: the answer is tiled by units of 4 from its first token on
        want = [(s, min(4, n - s)) for s in range(k, n, 4) if min(4, n - s) >= 2]
        assert us == want, (i, us, k, n)
        assert torch.equal(inputs[i, :k], rows.ids[i, :k]) and torch.equal(inputs[i, n:], rows.ids[i, n:])
    everywhere = build(Oracle(), Rows.of_windows(rows.ids), LUDRecipe(alpha=0.9, lookahead=4), pad)[1]
    assert everywhere[0][0][0] == 1  # the same rows as code windows: units from the prompt's second token on


def test_first_cuts_task_rows_at_the_prompt(tasks_ar):
    tok = tasks_ar.tokenizer
    recipe = FiRSTRecipe(data="tasks", windows=8, heldout_windows=len(TASKS))
    train, held = load_data(tok, recipe, "zoo:tasks-ar", torch.Generator().manual_seed(0))
    want = task_rows(tok, "train", 8, seed=0)
    assert torch.equal(train.x, want.ids) and torch.equal(train.k, want.prompt_len)
    assert torch.equal(train.ends, want.length) and len(held) == len(TASKS)
    for x, k in zip(held.x, held.k):
        assert tok.decode(x[:k]).endswith("=>")


def _fake_run(seen, card):
    def run(target, out, recipe, command=""):
        seen.append(recipe)
        from pathlib import Path

        Path(out).mkdir()
        (Path(out) / "card.json").write_text(json.dumps(card))
        return Path(out)
    return run


@pytest.mark.parametrize("recipe", ["lud", "first"])
def test_data_defaults_from_the_target(recipe, tmp_path, monkeypatch, capsys):
    assert default_data("zoo:tasks-ar") == default_data("zoo:tasks-draft") == "tasks"
    assert default_data("zoo:code-target") == default_data(str(tmp_path)) == "code"
    seen = []
    card = {"train_loss_final": 0, "heldout_units": {}, "heldout_plain_loss": {}, "heldout": {}}
    monkeypatch.setattr(lud_train if recipe == "lud" else first_train, "run", _fake_run(seen, card))
    for i, (target, extra, want) in enumerate([("zoo:tasks-ar", [], "tasks"), ("zoo:code-target", [], "code"),
                                               ("zoo:tasks-ar", ["--data", "code"], "code")]):
        assert main(["train", recipe, "--target", target, "--out", str(tmp_path / str(i)), *extra]) == 0
        assert seen[-1].data == want
    capsys.readouterr()
    assert main(["train", recipe, "--target", "zoo:tasks-ar", "--data", "text", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == "decodelab: --data must be one of code, tasks, got 'text'"
    assert len(seen) == 3 and not (tmp_path / "x").exists()
    with pytest.raises(DecodeLabError, match="--data must be one of"):
        (LUDRecipe if recipe == "lud" else FiRSTRecipe)(data="Tasks")


def test_default_outputs_follow_the_target():
    assert lud_train.default_out("zoo:tasks-ar").name == "tasks-ar-lud"
    assert lud_train.default_out("zoo:tasks-ar").parent.name == "checkpoints"
    assert first_train.default_out("zoo:tasks-ar", 2.0).name == "tasks-ar-first-2"


def test_lud_recipe_end_to_end_on_task_data(tmp_path):
    recipe = LUDRecipe(data="tasks", windows=32, heldout_windows=len(TASKS), batch_size=16, lookahead=8, warmup=1)
    out = lud_train.run("zoo:tasks-ar", tmp_path / "lud", recipe, progress=False, command="test")
    card = json.loads((out / "card.json").read_text())
    assert card["recipe"]["data"] == "tasks" and len(card["heldout_units"]["lud"]["position_accuracy"]) == 8
    assert card["heldout_units"]["base"]["tokens_in_units"] > 0.5  # answers are near-deterministic
    assert "data: tasks" in (out / "README.md").read_text()
    lud = decodelab.load(str(out))
    target = decodelab.load("zoo:tasks-ar")
    from methods.spec_helpers import equal_to_greedy

    equal_to_greedy("lud_lossless", target, "copy: Ann, Bob, Cid =>", 12, draft=lud)


def test_first_recipe_end_to_end_on_task_data(tmp_path):
    recipe = FiRSTRecipe(data="tasks", sparsity=2.0, windows=16, heldout_windows=len(TASKS), batch_size=8,
                         eval_every=1)
    out = first_train.run("zoo:tasks-ar", tmp_path / "first", recipe, progress=False, command="test")
    card = json.loads((out / "card.json").read_text())
    assert card["recipe"]["data"] == "tasks" and card["steps"] == 2 and card["heldout_windows"] == len(TASKS)
    assert sum(card["heldout"]["skip_sets"].values()) == len(TASKS)


def test_the_bundled_task_parts_are_found_from_the_target(tasks_ar):
    from decodelab import zoo
    from decodelab.methods.first import FiRSTConfig, load_routers, resolve_routers

    got = resolve_routers(FiRSTConfig(), tasks_ar)  # routers='auto'
    want, cfg = load_routers("tasks-ar-first-0.01")
    assert torch.equal(got.weight, want.weight) and cfg["model"] == "zoo:tasks-ar"
    code = resolve_routers(FiRSTConfig(), decodelab.load("zoo:code-target"))
    assert torch.equal(code.weight, load_routers("code-target-first-2")[0].weight)
    info = zoo.info("tasks-ar-lud")
    assert info["bundled"] and info["data"] == "tasks" and zoo.info("code-target-lud")["data"] == "code"
    lud = decodelab.load("zoo:tasks-ar-lud")
    assert lud.model.config.lud["placeholder_id"] == tasks_ar.tokenizer.pad_token_id
    out = decodelab.generate(tasks_ar, "copy: Ann, Bob, Cid =>", "lud", draft=lud, max_new_tokens=12)
    assert out.text.startswith(" Ann, Bob, Cid\n") and max(out.stats.committed) >= 3  # units of several tokens
