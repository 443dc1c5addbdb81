"""The Hyperfitting recipe (train/hyperfit.py): its schedule, its training windows, that fitting
memorises a small set, the checkpoint it writes, and its refusals."""
import json

import pytest
import torch

import decodelab
from decodelab.cli import main
from decodelab.errors import DecodeLabError
from decodelab.train.hyperfit import HyperfitRecipe, fit, lr_factor, run, training_windows, windows_loss


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert [lr_factor(s, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 20) == 1.0
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)
    assert lr_factor(20, 4, 20) == pytest.approx(0.0)
    decay = [lr_factor(s, 4, 20) for s in range(4, 21)]
    assert decay == sorted(decay, reverse=True)


@pytest.mark.parametrize("bad", [dict(sequences=0), dict(epochs=0), dict(lr=0.0), dict(lr=1.5), dict(warmup=-1),
                                 dict(eval_top_p=0.0), dict(batch_size=0)])
def test_recipe_refuses_bad_values(bad):
    with pytest.raises(DecodeLabError, match="hyperfit recipe"):
        HyperfitRecipe(**bad)


def test_training_windows_are_distinct_seeded_train_windows():
    tok = decodelab.load("zoo:code-target").tokenizer
    r = HyperfitRecipe(sequences=12, seq_len=32)
    w = training_windows(tok, r, 256)
    assert w.shape == (12, 32)
    assert torch.equal(w, training_windows(tok, r, 256))
    assert not torch.equal(w, training_windows(tok, HyperfitRecipe(sequences=12, seq_len=32, seed=1), 256))
    assert len({tuple(x) for x in w.tolist()}) == 12
    with pytest.raises(DecodeLabError, match="exceeds the model's context"):
        training_windows(tok, HyperfitRecipe(seq_len=512), 256)
    with pytest.raises(DecodeLabError, match="fewer than sequences"):
        training_windows(tok, HyperfitRecipe(sequences=10**7, seq_len=32), 256)


def test_fit_memorises_a_small_set():
    lm = decodelab.load("zoo:code-target")
    windows = training_windows(lm.tokenizer, HyperfitRecipe(sequences=4, seq_len=32), 256)
    before = windows_loss(lm.model, windows)
    rows = []
    fit(lm.model, windows, windows[:2], HyperfitRecipe(sequences=4, seq_len=32, epochs=25, batch_size=4, warmup=2,
                                                       lr=3e-3), rows.append, progress=False)
    assert [r["epoch"] for r in rows] == list(range(1, 26))
    assert rows[-1]["train_loss"] < 0.3 * before  # memorised: far below where it started
    assert rows[-1]["heldout_loss"] == pytest.approx(windows_loss(lm.model, windows[:2]), abs=1e-4)
    assert not lm.model.training


def test_run_writes_a_loadable_checkpoint_with_its_card(tmp_path, monkeypatch):
    from decodelab.zoo import heldout

    full = heldout.heldout_code_loss  # the card's loss runs on every held-out window; 2 here, for time
    monkeypatch.setattr(heldout, "heldout_code_loss", lambda *a, **k: full(*a, **k, max_windows=2))
    out = tmp_path / "hf"
    r = HyperfitRecipe(sequences=8, seq_len=32, epochs=2, warmup=1, batch_size=4, heldout_windows=2, eval_prompts=1,
                       eval_prompt_tokens=16, eval_new_tokens=12)
    run("zoo:code-target", out, r, progress=False, command="decodelab train hyperfit ...")
    card = json.loads((out / "card.json").read_text())
    assert card["base"] == "zoo:code-target" and card["epochs"] == 2 and card["dtype"] == "float16"
    assert card["recipe"]["sequences"] == 8 and card["heldout_loss"] > 0 and card["base_heldout_loss"] > 0
    fig = card["decode_figures"]
    assert set(fig) == {"hyperfit_greedy", "base_greedy", "base_top_p0.9", "prompts", "new_tokens"}
    assert all(0 < fig[k]["type_token_ratio"] <= 1 for k in ("hyperfit_greedy", "base_greedy"))
    rows = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows if "epoch" in row] == [0, 1, 2]
    assert (out / "loss.png").stat().st_size > 0 and "Decoding (1 held-out prompts" in (out / "README.md").read_text()
    tuned = decodelab.load(str(out))
    assert decodelab.generate(tuned, "def f(", "greedy", max_new_tokens=4).tokens
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("x")
    with pytest.raises(DecodeLabError, match="holds no zoo checkpoint"):
        run("zoo:code-target", tmp_path / "notes", r, progress=False)
    assert (tmp_path / "notes" / "keep.txt").exists()


def test_cli_refuses_a_bad_recipe_with_one_line(tmp_path, capsys):
    assert main(["train", "hyperfit", "--epochs", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("decodelab: hyperfit recipe") and not (tmp_path / "x").exists()
