"""Each recipe runs on CPU: a few steps by default, 20 steps in the slow suite."""
import json

import pytest
import torch

from decodelab import zoo


def _check(out, name, steps):
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == steps and card["name"] == name
    assert (out / "loss.png").stat().st_size > 0 and (out / "README.md").is_file()
    rows = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert rows[0]["kind"] == "start" and any(r["kind"] == "train" for r in rows)
    import transformers

    m = getattr(transformers, card["auto_class"]).from_pretrained(str(out))
    assert next(m.parameters()).dtype == torch.float16


def test_tasks_recipe_smoke(tmp_path):
    out = zoo.train("tasks-ar", out_dir=tmp_path / "t", max_steps=3, progress=False, evaluate=False)
    _check(out, "tasks-ar", 3)


def test_bidirectional_llama_recipe(tmp_path):
    """tasks-mdlm-llama: a stock LlamaForCausalLM marked masked_diffusion, trained with the MDLM
    objective through a full attention mask; decodelab.load gives the diffusion adapter with a KV cache."""
    import decodelab

    out = zoo.train("tasks-mdlm-llama", out_dir=tmp_path / "l", max_steps=2, progress=False, evaluate=False)
    _check(out, "tasks-mdlm-llama", 2)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["masked_diffusion"] is True
    lm = decodelab.load(str(out))
    assert "kv_cache" in lm.capabilities and lm.mask_id == config["mask_token_id"]


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


def test_init_from_continues_an_earlier_checkpoint(tmp_path):
    from safetensors.torch import load_file

    a = zoo.train("tasks-ar", out_dir=tmp_path / "a", max_steps=2, progress=False, evaluate=False, seed=0)
    # another seed: only starting from `a`'s weights keeps `b` close to them
    b = zoo.train("tasks-ar", out_dir=tmp_path / "b", max_steps=1, progress=False, evaluate=False, seed=5, init_from=a)
    c = zoo.train("tasks-ar", out_dir=tmp_path / "c", max_steps=1, progress=False, evaluate=False, seed=5)
    wa, wb, wc = (load_file(str(d / "model.safetensors")) for d in (a, b, c))

    def dist(x, y):
        return sum(float((x[k].float() - y[k].float()).norm()) for k in x)

    assert dist(wb, wa) < 0.2 * dist(wc, wa)
    card = json.loads((b / "card.json").read_text())
    assert f"--init-from {a}" in card["command"]
    start = json.loads((b / "training_log.jsonl").read_text().splitlines()[0])
    assert start["init_from"] == str(a)


def test_stratified_t_has_one_rate_per_stratum_and_is_uniform():
    from decodelab.errors import DecodeLabError
    from decodelab.zoo.training import sample_t

    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        t = sample_t(8, gen, "stratified")
        assert sorted((t * 8).floor().long().tolist()) == list(range(8))
    pooled = torch.cat([sample_t(8, gen, "stratified") for _ in range(2000)])
    assert abs(float(pooled.mean()) - 0.5) < 0.01 and abs(float((pooled < 0.25).float().mean()) - 0.25) < 0.01
    with pytest.raises(DecodeLabError, match="t_sampler"):
        sample_t(4, gen, "sobol")
