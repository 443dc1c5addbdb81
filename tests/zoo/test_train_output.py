"""`zoo train --out DIR` writes DIR whole or not at all; STOP and --init-from DIR still work."""
import dataclasses
import json

import pytest
from safetensors.torch import load_file

from decodelab import zoo
from decodelab.errors import DecodeLabError
from decodelab.zoo import training
from decodelab.zoo.recipes import Arch

# a tiny causal task recipe: a few seconds per run
TINY = dataclasses.replace(zoo.RECIPES["tasks-ar"], name="tiny", arch=Arch(hidden=32, ffn=64, layers=1, heads=2),
                           batch_size=4, tasks=("copy", "reverse"), task_weights=None, eval_every=2, log_every=1)
COMPLETE = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "training_log.jsonl", "loss.png", "card.json", "README.md"}


def _train(out, **kw):
    kw = {"max_steps": 2, "progress": False, "evaluate": False, **kw}
    return training.run(TINY, out_dir=out, **kw)


def _contents(d):
    return {p.name: p.read_bytes() for p in d.iterdir()}


def _interrupt_at_step(monkeypatch, n, exc=KeyboardInterrupt):
    real, calls = training.train_step, []

    def step(*a, **kw):
        calls.append(1)
        if len(calls) == n:
            raise exc("interrupted")
        return real(*a, **kw)

    monkeypatch.setattr(training, "train_step", step)


def test_a_run_writes_the_complete_directory_and_nothing_else(tmp_path):
    out = _train(tmp_path / "ckpt")
    assert out == tmp_path / "ckpt"
    assert {p.name for p in out.iterdir()} == COMPLETE
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no staging directory left over
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == 2 and card["recipe"]["arch"] == {"hidden": 32, "ffn": 64, "layers": 1, "heads": 2}
    assert f"--out {out} " in card["command"] + " "


def test_an_interrupted_first_run_leaves_no_directory(tmp_path, monkeypatch):
    _interrupt_at_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["step", "card"])
def test_a_failed_run_leaves_the_previous_checkpoint_untouched(tmp_path, monkeypatch, where):
    out = _train(tmp_path / "ckpt")
    before = _contents(out)
    if where == "step":
        _interrupt_at_step(monkeypatch, 1, RuntimeError)
    else:  # after the weights and tokenizer are saved, before the card is written

        def fail(*a, **kw):
            raise RuntimeError("interrupted")

        monkeypatch.setattr(training, "final_figures", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        _train(out, seed=1)
    assert _contents(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_new_run_replaces_a_previous_checkpoint(tmp_path):
    out = _train(tmp_path / "ckpt", max_steps=1)
    (out / "extra.txt").write_text("from the old run")
    _train(out, max_steps=2)
    assert {p.name for p in out.iterdir()} == COMPLETE
    assert json.loads((out / "card.json").read_text())["steps"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_init_from_the_out_directory_itself_continues_it(tmp_path):
    out = _train(tmp_path / "ckpt", max_steps=2)
    w0 = load_file(str(out / "model.safetensors"))
    fresh = _train(tmp_path / "fresh", max_steps=1, seed=5)
    _train(out, max_steps=1, seed=5, init_from=out)
    w1, wf = load_file(str(out / "model.safetensors")), load_file(str(fresh / "model.safetensors"))

    def dist(x, y):
        return sum(float((x[k].float() - y[k].float()).norm()) for k in x)

    assert 0 < dist(w1, w0) < 0.2 * dist(wf, w0)
    assert f"--init-from {out}" in json.loads((out / "card.json").read_text())["command"]


def test_stop_file_in_the_out_directory_stops_gracefully(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "STOP").touch()
    _train(out, max_steps=5)
    rows = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["start", "train", "eval", "stopped", "end"]
    assert json.loads((out / "card.json").read_text())["steps"] == 1
    assert {p.name for p in out.iterdir()} == COMPLETE  # STOP consumed


def test_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DecodeLabError, match="holds no zoo checkpoint"):
        _train(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DecodeLabError, match="not a directory"):
        _train(tmp_path / "file")
