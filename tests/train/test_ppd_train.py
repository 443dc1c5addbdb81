"""The PPD prompt recipe: the training layout on a hand-checked case, the student and teacher rows
against plain sequential forwards, the held-out accuracy table, the recipe end to end on a tiny
budget (files, card, trees, the prompts usable by the method, loss below its start), refusals."""
import json

import pytest
import torch

import decodelab
from decodelab.cli import main
from decodelab.errors import DecodeLabError
from decodelab.methods.ppd import build_tree, load_prompts
from decodelab.train.ppd import PPDRecipe, default_out, heldout, layout, run, student_teacher
from methods.spec_helpers import equal_to_greedy


def test_layout_on_a_hand_checked_case():
    pos, vis = layout(3, 2)  # tokens 0..2, then prompts (t, i): rows 3 + 2t + i
    assert pos.tolist() == [0, 1, 2, 1, 2, 2, 3, 3, 4]
    assert vis[:3, :3].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert not vis[:3, 3:].any()  # tokens never see prompt rows
    # prompt (t=1, i=1), row 6: tokens 0, 1 and prompts (1, 0), (1, 1)
    assert vis[6].nonzero().flatten().tolist() == [0, 1, 5, 6]
    assert vis[3].nonzero().flatten().tolist() == [0, 3]  # prompt (0, 0)


def test_student_and_teacher_rows_equal_sequential_forwards(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0]).model
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 96, (2, 6), generator=g)
    prompts = torch.randn(2, 32, generator=g)
    with torch.no_grad():
        student, teacher, valid = student_teacher(model, x, prompts, 2)
        emb = model.get_input_embeddings()
        for b in range(2):
            full = torch.log_softmax(model(input_ids=x[b:b + 1]).logits[0].float(), -1)
            for t in range(6):
                for i in range(2):
                    e = torch.cat([emb(x[b, :t + 1]), prompts[:i + 1]])[None]
                    pos = torch.cat([torch.arange(t + 1), torch.arange(t + 1, t + 2 + i)])[None]
                    want = torch.log_softmax(model(inputs_embeds=e, position_ids=pos).logits[0, -1].float(), -1)
                    assert torch.allclose(student[b, t, i], want, atol=1e-4), (b, t, i)
                    assert bool(valid[t, i]) == (t + i + 1 < 6)
                    if valid[t, i]:  # the target's distribution of the token i + 2 after t
                        assert torch.allclose(teacher[b, t, i], full[t + i + 1], atol=1e-5)


def test_heldout_accuracy_table_counts_ranks(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0]).model
    x = torch.randint(0, 96, (3, 8), generator=torch.Generator().manual_seed(1))
    ev = heldout(model, x, torch.randn(3, 32), 3, 96)  # every rank: each row sums to 1
    assert all(abs(sum(row) - 1) < 1e-3 for row in ev["accuracy"])  # entries rounded to 5 places
    assert all(row[-1] == pytest.approx(1.0, abs=1e-4) for row in ev["topk_accuracy"])
    assert len(ev["kl_per_prompt"]) == 3 and ev["loss"] > 0


@pytest.fixture
def small_corpus(monkeypatch):
    """The train and held-out streams cut to one corpus file each (tokenizing the whole train split
    takes about a minute; the slow test below uses it)."""
    from decodelab.zoo import batches, corpus

    tok = decodelab.load("zoo:code-target").tokenizer
    for split in ("train", "heldout"):
        text = corpus.read_code(corpus.code_files(split)[0])
        monkeypatch.setitem(batches._CODE_CACHE, split, torch.tensor(tok(text, add_special_tokens=False)["input_ids"]))


def test_the_recipe_end_to_end_on_a_tiny_budget(tmp_path, small_corpus):
    _end_to_end(tmp_path)


@pytest.mark.slow
def test_the_recipe_end_to_end_on_the_corpus(tmp_path):
    _end_to_end(tmp_path)


def _end_to_end(tmp_path):
    recipe = PPDRecipe(sequences=8, seq_len=32, batch_size=4, heldout_windows=4, eval_every=1, budgets="4,12")
    out = run("zoo:code-target", tmp_path / "p", recipe, progress=False, command="decodelab train ppd ...")
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "card.json",
                                              "training_log.jsonl", "loss.png"}
    card = json.loads((out / "card.json").read_text())
    assert card["model"] == "zoo:code-target" and card["m"] == 3 and card["parameters"] == 3 * 192
    assert card["memory_overhead_percent"] == pytest.approx(100 * 576 / card["model_parameters"], rel=1e-3)
    assert card["steps"] == 2 and card["train_tokens"] == 8 * 32
    assert card["heldout"]["loss"] < card["heldout_at_init"]["loss"]  # distillation moved the prompts
    assert len(card["heldout"]["topk_accuracy"]) == 3 and len(card["heldout"]["topk_accuracy"][0]) == 8
    prompts, cfg = load_prompts(out)
    assert cfg["trees"]["12"] == build_tree(prompts.accuracy, 12) and set(cfg["trees"]) == {"4", "12"}
    rows = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows].count("train") == 2
    target = decodelab.load("zoo:code-target")
    prompt = target.tokenizer("import os\n", add_special_tokens=False)["input_ids"]
    equal_to_greedy("ppd", target, prompt, 24, embeddings=str(out), budget=12)


def test_default_out():
    assert default_out("zoo:code-target").name == "code-target-ppd"
    assert default_out("zoo:code-target").parent.name == "heads"


@pytest.mark.parametrize("kw, match", [
    (dict(lr=1.5), "lr must be in \\(0, 1\\)"),
    (dict(sequences=0), "counts must be positive"),
    (dict(seq_len=4), "seq_len must be at least m \\+ 2 = 5"),
    (dict(budgets="4,x"), "budgets must be integers >= 2"),
    (dict(budgets="1"), "budgets must be integers >= 2"),
])
def test_bad_recipes_are_refused(kw, match):
    with pytest.raises(DecodeLabError, match=match):
        PPDRecipe(**kw)


@pytest.mark.parametrize("target, match", [
    ("zoo:nope", "unknown zoo model 'nope'"),
    ("zoo:tasks-mdlm", "trained on a transformers causal LM"),
])
def test_bad_targets_are_refused_and_nothing_is_written(target, match, tmp_path):
    with pytest.raises(DecodeLabError, match=match):
        run(target, tmp_path / "p", PPDRecipe(sequences=1), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_command_refuses_with_one_message(tmp_path, capsys):
    assert main(["train", "ppd", "--target", "zoo:code-target", "--lr", "2", "--out", str(tmp_path / "p")]) != 0
    assert "lr must be in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
