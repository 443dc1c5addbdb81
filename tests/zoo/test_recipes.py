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
    _check(out, name, 20 * len(zoo.RECIPES[name].stages()))  # max_steps caps each stage


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


def test_bf16_precision_autocasts_the_training_forward_only(tmp_path, monkeypatch):
    """precision="bf16": the training forward runs in bfloat16 under autocast, the weights and every
    evaluation (held-out loss, the card's figures) stay float32; the card, log and command say so.
    fp32 runs in float32."""
    from decodelab.errors import DecodeLabError
    from decodelab.zoo import training

    real_build = training.build_model
    seen = {}

    def build(*a, **k):  # the dtype of every output-head product, by whether it trains (grad on)
        m = real_build(*a, **k)
        m.get_output_embeddings().register_forward_hook(
            lambda mod, i, o: seen.setdefault("train" if torch.is_grad_enabled() else "eval", set()).add(o.dtype))
        return m

    monkeypatch.setattr(training, "build_model", build)
    out = zoo.train("tasks-ar", out_dir=tmp_path / "b", max_steps=2, progress=False, evaluate=True, precision="bf16")
    assert seen == {"train": {torch.bfloat16}, "eval": {torch.float32}}
    card = json.loads((out / "card.json").read_text())
    assert card["precision"] == "bf16" and "--precision bf16" in card["command"]
    start = json.loads((out / "training_log.jsonl").read_text().splitlines()[0])
    assert start["precision"] == "bf16"

    seen.clear()
    out = zoo.train("tasks-ar", out_dir=tmp_path / "f", max_steps=1, progress=False, evaluate=False)
    assert seen["train"] == {torch.float32} and json.loads((out / "card.json").read_text())["precision"] == "fp32"
    with pytest.raises(DecodeLabError, match="precision must be"):
        zoo.train("tasks-ar", out_dir=tmp_path / "x", max_steps=1, progress=False, precision="fp16")
    assert not (tmp_path / "x").exists()


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


def _tiny_context_recipe():
    from decodelab.zoo.recipes import Arch, ContextStage, Recipe

    return Recipe(name="tiny", kind="causal", data="code", arch=Arch(hidden=32, ffn=64, layers=1, heads=2),
                  seq_len=32, batch_size=2, tokens=128, eval_every=1, eval_windows=2,
                  context=ContextStage(seq_len=64, batch_size=2, tokens=256, lr=1e-3, eval_every=1, eval_windows=2))


def test_a_context_stage_trains_on_longer_windows_and_extends_the_context(tmp_path, monkeypatch):
    """Recipe.context: a second stage on longer windows (its own budget), the model's context
    becoming the stage's; --stage main / context run one stage (context from a main checkpoint)."""
    from decodelab.zoo import batches, training

    gen = torch.Generator().manual_seed(0)
    for split in ("train", "heldout"):  # a small stand-in corpus, so no stdlib tokenising here
        monkeypatch.setitem(batches._CODE_CACHE, split, torch.randint(3, 200, (4096,), generator=gen))
    r = _tiny_context_recipe()

    def card_of(out):
        return json.loads((out / "card.json").read_text()), json.loads((out / "config.json").read_text())

    card, config = card_of(training.run(r, out_dir=tmp_path / "all", progress=False, evaluate=False))
    assert [s["seq_len"] for s in card["stages"]] == [32, 64] and config["max_position_embeddings"] == 64
    assert [s["tokens_seen"] for s in card["stages"]] == [128, 128 + 256] and card["tokens_seen"] == 384
    assert card["recipe"]["context"]["seq_len"] == 64 and "heldout_loss_32" in card
    starts = [json.loads(x) for x in (tmp_path / "all" / "training_log.jsonl").read_text().splitlines()
              if '"start"' in x]
    assert [s["seq_len"] for s in starts] == [32, 64]

    main = training.run(r, out_dir=tmp_path / "main", progress=False, evaluate=False, stage="main")
    card, config = card_of(main)
    assert [s["seq_len"] for s in card["stages"]] == [32] and config["max_position_embeddings"] == 32
    card, config = card_of(training.run(r, out_dir=tmp_path / "ctx", progress=False, evaluate=False,
                                        stage="context", init_from=main))
    assert [s["seq_len"] for s in card["stages"]] == [64] and config["max_position_embeddings"] == 64
    assert card["main_stage"]["tokens_seen"] == 128 and "--stage context" in card["command"]
    assert card["tokens_seen"] == card["stages"][0]["tokens_seen"] == 128 + 256  # counted from the main stage's


def test_context_stage_checks():
    import dataclasses

    from decodelab.errors import DecodeLabError
    from decodelab.zoo.recipes import ContextStage

    r = _tiny_context_recipe()
    assert [s.seq_len for s in r.stages()] == [32, 64] and r.max_length == 64
    assert "context" not in zoo.RECIPES["tasks-ar"].describe()
    with pytest.raises(DecodeLabError, match="must exceed seq_len"):
        dataclasses.replace(r, context=ContextStage(seq_len=32, batch_size=2, tokens=8, lr=1e-3))
    with pytest.raises(DecodeLabError, match="context.lr"):
        dataclasses.replace(r, context=ContextStage(seq_len=64, batch_size=2, tokens=8, lr=0))
    with pytest.raises(DecodeLabError, match="causal recipes on code"):
        dataclasses.replace(zoo.RECIPES["tasks-ar"], context=r.context)
