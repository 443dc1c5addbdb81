"""Each recipe runs on CPU: a few steps by default, 20 steps in the slow suite."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from decodelab import zoo


def _check(out, name, steps):
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == steps and card["name"] == name
    assert (out / "loss.png").stat().st_size > 0 and (out / "README.md").is_file()
    rows = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert rows[0]["kind"] == "start" and any(r["kind"] == "train" for r in rows)
    cls = AutoModelForCausalLM if zoo.RECIPES[name].kind == "causal" else AutoModelForMaskedLM
    m = cls.from_pretrained(str(out))
    assert next(m.parameters()).dtype == torch.float16


def test_tasks_recipe_smoke(tmp_path):
    out = zoo.train("tasks-ar", out_dir=tmp_path / "t", max_steps=3, progress=False, evaluate=False)
    _check(out, "tasks-ar", 3)


def test_training_is_reproducible(tmp_path):
    a = zoo.train("tasks-mdlm", out_dir=tmp_path / "a", max_steps=2, progress=False, evaluate=False, seed=3)
    b = zoo.train("tasks-mdlm", out_dir=tmp_path / "b", max_steps=2, progress=False, evaluate=False, seed=3)
    la = [json.loads(x)["loss"] for x in (a / "training_log.jsonl").read_text().splitlines() if '"train"' in x]
    lb = [json.loads(x)["loss"] for x in (b / "training_log.jsonl").read_text().splitlines() if '"train"' in x]
    assert la == lb
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.MODELS)
def test_recipe_20_steps(name, tmp_path):
    out = zoo.train(name, out_dir=tmp_path / name, max_steps=20, progress=False, evaluate=False)
    _check(out, name, 20)
