"""Loss figures of a zoo model under training and of its saved checkpoint: held-out and
train-sample losses (code), the objective on fixed test examples and quick accuracy (tasks),
and the card's figures."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch

from decodelab.zoo.batches import TaskBatches, code_windows
from decodelab.zoo.losses import objective, windows_loss
from decodelab.zoo.modeling import load_checkpoint
from decodelab.zoo.recipes import Recipe


@torch.no_grad()
def heldout_code_loss(model, recipe: Recipe, tokenizer, device, max_windows: int | None = None, seed: int = 1234):
    """Held-out loss on non-overlapping ``seq_len`` windows of the held-out split.

    causal: mean next-token cross-entropy (nats/token).
    mdlm: dict with the MDLM bound (weighted, nats/token) and the plain masked-token CE,
    with t and masks from a fixed generator.
    """
    was_training = model.training
    model.eval()
    windows = code_windows("heldout", tokenizer, recipe.seq_len, max_windows)
    bound, masked_ce = windows_loss(model, recipe.kind, windows, recipe.batch_size, device,
                                    tokenizer.mask_token_id, seed)
    model.train(was_training)  # a model under training goes on training; a loaded one stays in eval
    return bound if recipe.kind == "causal" else {"bound": bound, "masked_ce": masked_ce}


@torch.no_grad()
def train_sample_loss(model, recipe: Recipe, tok, n_windows: int = 64, device: str = "cpu") -> float:
    """The same loss as held-out, on evenly spaced windows of the train split."""
    windows = code_windows("train", tok, recipe.seq_len, n_windows)
    return windows_loss(model, recipe.kind, windows, recipe.batch_size, device, tok.mask_token_id)[0]


@torch.no_grad()
def task_heldout_loss(model, recipe: Recipe, tok, device, n_per_task: int = 32) -> float:
    """The training objective on a fixed set of test-split examples, averaged over tasks."""
    from decodelab.zoo import tasks

    was_training = model.training
    model.eval()
    sub = dataclasses.replace(recipe, batch_size=n_per_task)
    gen = torch.Generator().manual_seed(4321)
    names = list(recipe.tasks or tasks.TASKS)
    tot = 0.0
    for name in names:
        batch = next(TaskBatches(sub, tok, random.Random(f"{name}:eval"), split="test", names=[name]))
        tot += float(objective(model, recipe.kind, batch, device, tok.mask_token_id, gen).loss)
    model.train(was_training)
    return tot / len(names)


def quick_task_accuracy(model, recipe: Recipe, tok, n: int = 30) -> dict:
    """Accuracy on ``n`` test examples of each headline task the recipe trains on (progress
    during training; the card's figures use more examples)."""
    from decodelab.zoo.evaluate import HEADLINE_TASKS, task_accuracy

    names = [t for t in (recipe.tasks or HEADLINE_TASKS) if t in HEADLINE_TASKS]
    acc = task_accuracy(model, tok, recipe.kind, n=n, task_names=names, gen_length=recipe.gen_len or 24)
    model.train()
    return acc


def final_figures(recipe: Recipe, tok, ckpt: Path, train_losses: list[float], evaluate: bool = True,
                  device: str = "cpu") -> dict:
    """Figures for the card, measured on the saved (fp16) weights in ``ckpt`` run in float32 on
    ``device`` (the training device: the whole held-out split of a large model is slow on a CPU);
    ``train_losses``: the logged training losses. Task accuracy is measured on the CPU."""
    m = load_checkpoint(recipe, ckpt, device)
    m.eval()
    figs: dict = {}
    if train_losses:
        figs["train_loss_last"] = round(sum(train_losses[-10:]) / len(train_losses[-10:]), 4)
    if recipe.data == "tasks":
        figs["heldout_loss"] = round(task_heldout_loss(m, recipe, tok, device), 4)
        if evaluate:
            m = m.to("cpu")
            from decodelab.zoo.evaluate import task_accuracy

            figs["task_accuracy"] = task_accuracy(m, tok, recipe.kind, n=recipe.eval_examples)
        return figs
    h = heldout_code_loss(m, recipe, tok, device, max_windows=None if evaluate else 8)
    if recipe.kind == "causal":
        figs["heldout_loss"] = round(h, 4)
    else:
        figs["heldout_loss"] = round(h["bound"], 4)
        figs["heldout_masked_ce"] = round(h["masked_ce"], 4)
    figs["train_loss_eval"] = round(train_sample_loss(m, recipe, tok, device=device), 4)
    return figs
