"""Hyperfitting: fine-tune a causal LM to near-zero training loss on a small set, then decode greedily.

Carlsson et al. 2024, "The Hyperfitting Phenomenon: Sharpening and Stabilizing LLMs for
Open-Ended Text Generation" (arXiv 2412.04318). Their recipe: about 2000 sequences of 256 tokens,
20-30 epochs, Adam with a small constant learning rate (1e-6 for 7B-parameter models), batch size
8, no weight decay, until the training loss is near zero. Their finding: greedy decoding of the
hyperfitted model repeats itself far less than greedy on the base model and reads better than
top-p sampling, although its held-out perplexity is much worse (the distribution sharpens: the
top token gets nearly all the mass).

Here: `sequences` windows of `seq_len` tokens drawn (seeded) from the zoo code corpus's TRAIN
split, AdamW without weight decay, batches of `batch_size` reshuffled every epoch. Deviations,
for a 2.56M-parameter model on a CPU: the learning rate peaks at 1e-3 (a 1e-6 step moves a model
this small nowhere) and decays (cosine, after `warmup` steps) instead of staying constant, and the
windows are 64 tokens: at a constant 1e-3 the model had memorised 2000 x 64 tokens only down to a
training loss of 0.32 after 16 epochs (a probe run), and 2000 x 256 tokens is far past what it can
memorise in 30 epochs. Each epoch logs the training loss and the loss on held-out windows.

The checkpoint (fp16 safetensors, the tokenizer, `training_log.jsonl`, `loss.png`, `card.json`,
README) is written whole or not at all (zoo.staging). The card also holds `decode_figures`:
type-token ratio and repeated-4-gram rate of the hyperfitted model's greedy output against the
base model's greedy and top-p outputs on held-out prompts.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.diversity import mean, repetition, type_token_ratio
from ..errors import DecodeLabError
from .curves import epoch_loss_plot


@dataclass(frozen=True, kw_only=True)
class HyperfitRecipe:
    sequences: int = 2000  # training windows
    seq_len: int = 64  # tokens per window
    epochs: int = 30
    lr: float = 1e-3
    warmup: int = 100  # steps of linear warm-up, then cosine decay to 0
    batch_size: int = 8
    seed: int = 0
    heldout_windows: int = 96  # 256-token held-out windows for the per-epoch loss
    eval_prompts: int = 20  # held-out prompts for the decode figures (0: none)
    eval_prompt_tokens: int = 32
    eval_new_tokens: int = 192
    eval_top_p: float = 0.9  # the base model's top-p row

    def __post_init__(self):
        counts = (self.sequences, self.seq_len, self.epochs, self.batch_size, self.heldout_windows)
        if min(counts) < 1 or min(self.warmup, self.eval_prompts) < 0:
            raise DecodeLabError("hyperfit recipe: counts must be positive (warmup and eval_prompts >= 0)")
        if not (0 < self.lr < 1) or not (0 < self.eval_top_p <= 1):
            raise DecodeLabError(f"hyperfit recipe: lr must be in (0, 1) and eval_top_p in (0, 1], got {self.lr}, "
                                 f"{self.eval_top_p}")


def training_windows(tokenizer, recipe: HyperfitRecipe, max_len: int) -> torch.Tensor:
    """[sequences, seq_len] distinct non-overlapping windows of the train split, seeded."""
    from ..zoo.batches import code_windows

    if recipe.seq_len > max_len:
        raise DecodeLabError(f"seq_len {recipe.seq_len} exceeds the model's context of {max_len} tokens")
    windows = code_windows("train", tokenizer, recipe.seq_len)
    if recipe.sequences > len(windows):
        raise DecodeLabError(f"the train split has {len(windows)} windows of {recipe.seq_len} tokens, fewer than "
                             f"sequences={recipe.sequences}")
    gen = torch.Generator().manual_seed(recipe.seed)
    return windows[torch.randperm(len(windows), generator=gen)[: recipe.sequences]]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def windows_loss(model, windows: torch.Tensor, batch: int = 16) -> float:
    """Mean next-token cross-entropy (nats/token) over windows [N, T] (the zoo's causal loss)."""
    from ..zoo.losses import windows_loss as zoo_windows_loss

    was = model.training
    model.eval()
    with torch.no_grad():
        loss = zoo_windows_loss(model, "causal", windows, batch, "cpu", mask_id=0)[0]
    model.train(was)
    return loss


def fit(model, windows: torch.Tensor, heldout: torch.Tensor, recipe: HyperfitRecipe, log, progress=True) -> None:
    """Train `model` in place on windows [N, T]; log(row) once per epoch."""
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(recipe.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    steps = math.ceil(len(windows) / recipe.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, recipe.warmup, steps * recipe.epochs))
    bar = tqdm(total=steps * recipe.epochs, desc="hyperfit", unit="step", disable=not progress)
    model.train()
    t0 = time.time()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(windows), generator=gen)
        total = 0.0
        for j in range(0, len(windows), recipe.batch_size):
            x = windows[order[j:j + recipe.batch_size]]
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(x)
            bar.update(1)
        row = {"epoch": epoch + 1, "train_loss": round(total / len(windows), 4),
               "heldout_loss": round(windows_loss(model, heldout), 4), "time_s": round(time.time() - t0, 1)}
        bar.set_postfix(train=row["train_loss"], heldout=row["heldout_loss"])
        log(row)
    bar.close()
    model.eval()


def decode_figures(hyperfit, base, tokenizer, recipe: HyperfitRecipe, progress=True) -> dict:
    """Type-token ratio and repeated-4-gram rate of greedy on the hyperfitted model against greedy
    and top-p sampling on the base model, on held-out prompts (each a mean over prompts)."""
    from tqdm import tqdm

    from .. import api
    from ..zoo.corpus import heldout_prefixes

    texts = heldout_prefixes(recipe.eval_prompts, recipe.eval_prompt_tokens, seed=recipe.seed, tokenizer=tokenizer)
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"][: recipe.eval_prompt_tokens] for t in texts]
    rows = {"hyperfit_greedy": (hyperfit, "greedy", {}), "base_greedy": (base, "greedy", {}),
            f"base_top_p{recipe.eval_top_p}": (base, "sample", dict(top_p=recipe.eval_top_p))}
    out = {}
    for name, (model, method, kw) in tqdm(rows.items(), desc="decode figures", disable=not progress):
        outs = [api.generate(model, p, method, max_new_tokens=recipe.eval_new_tokens, ignore_eos=True,
                             **({**kw, "seed": recipe.seed + i} if method == "sample" else {})).tokens
                for i, p in enumerate(prompts)]
        out[name] = {"type_token_ratio": round(mean(type_token_ratio(o) for o in outs), 4),
                     "repetition_4gram": round(mean(repetition(o, 4) for o in outs), 4)}
    out["prompts"], out["new_tokens"] = len(prompts), recipe.eval_new_tokens
    return out


def run(base: str, out: str | Path, recipe: HyperfitRecipe, progress: bool = True, command: str = "") -> Path:
    """Hyperfit zoo model or directory `base` and write the checkpoint to `out` (whole or not at all)."""
    from .. import api
    from ..zoo.heldout import heldout_code_loss
    from ..zoo.recipes import RECIPES
    from ..zoo.staging import check_replaceable, staged_dir
    from ..zoo.trainlog import TrainLog

    out = Path(out)
    check_replaceable(out)
    base_lm = api.load(base)
    tok = base_lm.tokenizer
    if tok is None:
        raise DecodeLabError(f"hyperfitting {base} needs its tokenizer (the training windows are tokenized code)")
    windows = training_windows(tok, recipe, base_lm.max_length or recipe.seq_len)
    from ..zoo.batches import code_windows

    heldout = code_windows("heldout", tok, 256, recipe.heldout_windows)
    model = copy.deepcopy(base_lm.model)  # the base stays as it is for the comparison
    torch.manual_seed(recipe.seed)
    with staged_dir(out) as tmp, TrainLog(tmp / "training_log.jsonl") as log:
        start = {"epoch": 0, "train_loss": round(windows_loss(model, windows), 4),
                 "heldout_loss": round(windows_loss(model, heldout), 4), "time_s": 0.0}
        log.emit(start)
        fit(model, windows, heldout, recipe, log.emit, progress)
        model.to(torch.float16).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        model.to(torch.float32)
        epoch_loss_plot(log.rows, tmp / "loss.png", f"hyperfit {base}", "loss (nats/token)",
                        "train (the hyperfitting set)")
        ref = RECIPES["code-target"]  # the zoo's held-out windows and batch, as on the base's card
        tuned = api.load(str(tmp))  # the saved fp16 weights, run in float32
        card = {"name": out.name, "base": base, "kind": "causal", "architecture": type(model).__name__,
                "auto_class": "AutoModelForCausalLM", "dtype": "float16", "command": command,
                "recipe": {"description": "Hyperfitting (arXiv 2412.04318): the base fine-tuned to near-zero "
                                          "training loss on a small set; decode it greedily.",
                           **dataclasses.asdict(recipe)},
                "parameters": sum(p.numel() for p in model.parameters()), "epochs": recipe.epochs,
                "train_loss_first_epoch": log.rows[1]["train_loss"], "train_loss_final": log.rows[-1]["train_loss"],
                "train_time_s": log.elapsed(), "heldout_loss": round(heldout_code_loss(tuned.model, ref, tok, "cpu"), 4),
                "base_heldout_loss": _base_card(base).get("heldout_loss"), "torch": torch.__version__}
        if recipe.eval_prompts:
            card["decode_figures"] = decode_figures(tuned, base_lm, tok, recipe, progress)
        (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(readme(card))
    return out


def _base_card(base: str) -> dict:
    from ..zoo.card import read_card

    if base.startswith("zoo:"):
        from .. import zoo

        return read_card(zoo.resolve(base[4:]))
    return read_card(Path(base))


def readme(card: dict) -> str:
    """The model card: what it is, its figures, the recipe."""
    lines = [f"# zoo:{card['name']}", "", card["recipe"]["description"], "",
             f"- base: `{card['base']}` (held-out loss {card.get('base_heldout_loss')})",
             f"- {card['architecture']}, {card['parameters']:,} parameters, fp16 safetensors; load with "
             f"`decodelab.load(\"zoo:{card['name']}\")` or `transformers.AutoModelForCausalLM`",
             f"- training loss {card['train_loss_first_epoch']} after the first epoch, {card['train_loss_final']} after "
             f"epoch {card['epochs']}; held-out loss {card['heldout_loss']} nats/token (all held-out windows)",
             f"- train time {card['train_time_s']} s; command: `{card['command']}`", ""]
    fig = card.get("decode_figures")
    if fig:
        lines += [f"## Decoding ({fig['prompts']} held-out prompts, {fig['new_tokens']} new tokens)", "",
                  "| decoding | type-token ratio (higher: more varied) | repeated 4-grams (lower: less repetitive) |",
                  "| --- | --- | --- |"]
        lines += [f"| {k} | {v['type_token_ratio']} | {v['repetition_4gram']} |" for k, v in fig.items()
                  if isinstance(v, dict)]
        lines.append("")
    lines += ["## Recipe", "", "```json", json.dumps(card["recipe"], indent=2, sort_keys=True), "```", "",
              "Curves: `loss.png`; per-epoch log: `training_log.jsonl`.", ""]
    return "\n".join(lines)

