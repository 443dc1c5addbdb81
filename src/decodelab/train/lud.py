"""Lexical Unit Decoding: fine-tune a copy of a causal LM to emit a lexical unit per step.

Sun et al. 2024, "Decoding at the Speed of Thought: Harnessing Parallel Decoding of Lexical Units
for LLMs" (LREC-COLING 2024, arXiv 2405.15208). A lexical unit is a contiguous span of tokens that
the model predicts confidently: every token of it has p(x_t | x_<t) >= alpha under the model,
teacher-forced, and the tokens just outside it do not. The training data is reconfigured so that
the model predicts a whole unit from its context plus placeholders: for a unit x_a .. x_b, the
inputs x_a .. x_{b-1} are replaced by the placeholder token, and every position still predicts the
next true token (so x_a comes from the real context, x_{a+1} .. x_b from the placeholders, and x_b
is fed as a real token again). At inference (methods/lud.py) the model forwards
[last token, k - 1 placeholders] and emits the k predictions up to the first unconfident one.

Here: units are found by the model being fine-tuned (`--target`, the paper's "the model itself")
on `windows` windows of `seq_len` tokens of the zoo code corpus's TRAIN split; runs longer than
`lookahead` are cut into units of at most `lookahead` tokens (a step predicts at most that many).
The placeholder is the tokenizer's pad token (`<|pad|>` in the zoo tokenizer, id 1), which never
occurs in the corpus. The copy is fine-tuned on the reconfigured windows (AdamW, linear warm-up
then cosine decay, `epochs` passes) and saved as fp16 with `config.lud` = {placeholder_id,
lookahead, alpha} so the method finds its placeholder. Held-out figures on the card (windows of
the held-out split, units found by the base model): the unit length distribution, the share of
tokens inside units, and the fine-tuned model's accuracy at each position of a unit (position 1
predicted from the real context, 2.. from placeholders), next to the base model's loss on plain
held-out windows before and after fine-tuning.

Deviations: the recipe's alpha is 0.9 (the card's reading; the paper's exact value could not be
checked from the text available here), but the bundled zoo:code-target-lud is trained with
--alpha 0.6: our 2.56M-parameter target gives p >= 0.9 to only 6.3% of held-out tokens, which
leaves 1.5% of them inside units (of two tokens or more) and nothing to decode in parallel; at 0.6
it is about 11% (train split). Units are found once by the base model, not re-found as the model
changes. Budget for one CPU thread: 3200 windows of 128 tokens, one epoch (about 5 minutes).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DecodeLabError


@dataclass(frozen=True, kw_only=True)
class LUDRecipe:
    windows: int = 3200  # training windows of the train split
    seq_len: int = 128  # tokens per window
    alpha: float = 0.9  # a token is confident when p(x_t | x_<t) >= alpha
    lookahead: int = 4  # the longest unit (tokens predicted per step)
    epochs: int = 1
    lr: float = 1e-3
    warmup: int = 50
    batch_size: int = 16
    seed: int = 0
    heldout_windows: int = 64  # held-out windows for the figures

    def __post_init__(self):
        if min(self.windows, self.seq_len, self.epochs, self.batch_size, self.heldout_windows) < 1 or self.warmup < 0:
            raise DecodeLabError("lud recipe: counts must be positive (warmup >= 0)")
        if not 2 <= self.lookahead <= 64:
            raise DecodeLabError(f"lud recipe: lookahead must be in [2, 64], got {self.lookahead}")
        if not (0.5 <= self.alpha < 1) or not (0 < self.lr < 1):
            raise DecodeLabError(f"lud recipe: alpha must be in [0.5, 1) and lr in (0, 1), got {self.alpha}, {self.lr}")


def find_units(conf: torch.Tensor, alpha: float, max_len: int) -> list[tuple[int, int]]:
    """Lexical units of one window: (start, length) of each maximal run of positions with
    conf >= alpha, cut into pieces of at most max_len; pieces of one token are not units (nothing
    to predict in parallel). conf: [T], conf[t] = p(x_t | x_<t) (conf[0]: no prediction, ignored)."""
    ok = (conf >= alpha).tolist()
    ok[0] = False
    units, t, T = [], 1, len(ok)
    while t < T:
        if not ok[t]:
            t += 1
            continue
        end = t
        while end < T and ok[end]:
            end += 1
        for s in range(t, end, max_len):
            n = min(max_len, end - s)
            if n >= 2:
                units.append((s, n))
        t = end
    return units


def reconfigure(window: torch.Tensor, units: list[tuple[int, int]], placeholder: int) -> torch.Tensor:
    """The model's input for one window: inside each unit, every token but the last replaced by the
    placeholder. The labels stay the window itself. window: [T] -> [T]."""
    out = window.clone()
    for s, n in units:
        out[s:s + n - 1] = placeholder
    return out


@torch.no_grad()
def confidences(model, windows: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """p(x_t | x_<t) teacher-forced, [N, T] (column 0 is 0: nothing predicts the first token)."""
    out = torch.zeros(windows.shape, dtype=torch.float32)
    for i in range(0, len(windows), batch):
        x = windows[i:i + batch]
        logp = torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)  # [B, T, V]
        out[i:i + batch, 1:] = logp[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1).exp()
    return out


def build(model, windows: torch.Tensor, recipe: LUDRecipe, placeholder: int):
    """Units found by `model` and the reconfigured inputs: (inputs [N, T], units per window)."""
    conf = confidences(model, windows)
    units = [find_units(c, recipe.alpha, recipe.lookahead) for c in conf]
    inputs = torch.stack([reconfigure(w, u, placeholder) for w, u in zip(windows, units)])
    return inputs, units


def unit_figures(model, inputs: torch.Tensor, windows: torch.Tensor, units: list, lookahead: int) -> dict:
    """Unit length distribution, share of tokens in units, and the model's greedy accuracy at each
    position of a unit (1 = the unit's first token, from the real context)."""
    hits, seen = [0] * lookahead, [0] * lookahead
    with torch.no_grad():
        for i in range(0, len(inputs), 32):
            pred = model(input_ids=inputs[i:i + 32]).logits.argmax(-1)  # [B, T]
            for b, us in enumerate(units[i:i + 32]):
                for s, n in us:
                    for j in range(n):  # the prediction of x_{s+j} is read at position s+j-1
                        seen[j] += 1
                        hits[j] += int(pred[b, s + j - 1] == windows[i + b, s + j])
    lengths = Counter(n for us in units for _, n in us)
    total = sum(lengths.values())
    return {"units": total, "tokens_in_units": round(sum(k * v for k, v in lengths.items()) / windows.numel(), 4),
            "length_share": {str(k): round(v / max(1, total), 4) for k, v in sorted(lengths.items())},
            "mean_length": round(sum(k * v for k, v in lengths.items()) / max(1, total), 3),
            "position_accuracy": [round(h / s, 4) if s else None for h, s in zip(hits, seen)],
            "position_count": seen}


def lm_loss(model, inputs: torch.Tensor, labels: torch.Tensor, batch: int = 32) -> float:
    """Mean next-token cross-entropy of labels given inputs (nats/token)."""
    was, total, n = model.training, 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            x, y = inputs[i:i + batch], labels[i:i + batch]
            total += model(input_ids=x, labels=y).loss.item() * len(x)
            n += len(x)
    model.train(was)
    return total / n


def fit(model, inputs, labels, held_in, held_lab, recipe: LUDRecipe, log, progress=True) -> None:
    """Fine-tune `model` in place on (inputs, labels) [N, T]; log(row) once per epoch."""
    from tqdm import tqdm

    from .hyperfit import lr_factor

    gen = torch.Generator().manual_seed(recipe.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    steps = math.ceil(len(inputs) / recipe.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, recipe.warmup, steps * recipe.epochs))
    bar = tqdm(total=steps * recipe.epochs, desc="lud", unit="step", disable=not progress)
    model.train()
    t0 = time.time()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(inputs), generator=gen)
        total = 0.0
        for j in range(0, len(inputs), recipe.batch_size):
            idx = order[j:j + recipe.batch_size]
            loss = model(input_ids=inputs[idx], labels=labels[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            bar.update(1)
            bar.set_postfix(loss=round(loss.item(), 3))
        row = {"epoch": epoch + 1, "train_loss": round(total / len(inputs), 4),
               "heldout_loss": round(lm_loss(model, held_in, held_lab), 4), "time_s": round(time.time() - t0, 1)}
        log(row)
    bar.close()
    model.eval()


def placeholder_id(tok) -> int:
    if tok is None or tok.pad_token_id is None:
        raise DecodeLabError("lud needs a placeholder token: the tokenizer has no pad token")
    return int(tok.pad_token_id)


def run(target: str, out: str | Path, recipe: LUDRecipe, progress: bool = True, command: str = "",
        windows: torch.Tensor | None = None) -> Path:
    """Fine-tune zoo model or directory `target` for LUD and write the checkpoint to `out` (whole or
    not at all). windows: the training windows [N, T] (default: `recipe.windows` windows of
    `recipe.seq_len` tokens drawn from the train split)."""
    from .. import api
    from ..zoo.batches import code_windows
    from ..zoo.staging import check_replaceable, staged_dir
    from ..zoo.trainlog import TrainLog
    from .curves import epoch_loss_plot
    from .hyperfit import _base_card, training_windows

    out = Path(out)
    check_replaceable(out)
    base_lm = api.load(target)
    tok = base_lm.tokenizer
    pad = placeholder_id(tok)
    if windows is None:
        windows = training_windows(tok, _as_hyperfit(recipe), base_lm.max_length or recipe.seq_len)
    heldout = code_windows("heldout", tok, recipe.seq_len, recipe.heldout_windows)
    full = code_windows("heldout", tok, base_lm.max_length or 256, recipe.heldout_windows)  # the whole context
    base = base_lm.model
    inputs, units = build(base, windows, recipe, pad)
    held_in, held_units = build(base, heldout, recipe, pad)
    model = copy.deepcopy(base)
    torch.manual_seed(recipe.seed)
    with staged_dir(out) as tmp, TrainLog(tmp / "training_log.jsonl") as log:
        log.emit({"epoch": 0, "train_loss": round(lm_loss(model, inputs, windows), 4),
                  "heldout_loss": round(lm_loss(model, held_in, heldout), 4), "time_s": 0.0})
        fit(model, inputs, windows, held_in, heldout, recipe, log.emit, progress)
        model.config.lud = {"placeholder_id": pad, "lookahead": recipe.lookahead, "alpha": recipe.alpha}
        model.to(torch.float16).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        model.to(torch.float32)
        epoch_loss_plot(log.rows, tmp / "loss.png", f"lud {target}", "loss (nats/token)",
                        "train (reconfigured windows)")
        tuned = api.load(str(tmp)).model  # the saved fp16 weights, run in float32
        card = {"name": out.name, "base": target, "kind": "causal", "architecture": type(model).__name__,
                "auto_class": "AutoModelForCausalLM", "dtype": "float16", "command": command,
                "recipe": {"description": "Lexical Unit Decoding (arXiv 2405.15208): the base fine-tuned to predict "
                                          "a lexical unit per step from placeholder tokens; decode it with the "
                                          "lud method, or draft with it (lud_lossless).",
                           **dataclasses.asdict(recipe)},
                "placeholder": {"id": pad, "token": tok.convert_ids_to_tokens(pad)},
                "parameters": sum(p.numel() for p in model.parameters()), "epochs": recipe.epochs,
                "train_units": sum(len(u) for u in units),
                "train_tokens_in_units": round(sum(n for us in units for _, n in us) / windows.numel(), 4),
                "train_loss_first_epoch": log.rows[1]["train_loss"], "train_loss_final": log.rows[-1]["train_loss"],
                "train_time_s": log.elapsed(),
                "heldout_reconfigured_loss": {"base": log.rows[0]["heldout_loss"], "lud": log.rows[-1]["heldout_loss"]},
                "heldout_loss": round(lm_loss(tuned, full, full, 8), 4),
                "base_heldout_loss": round(lm_loss(base, full, full, 8), 4),
                "heldout_plain_loss": {"base": round(lm_loss(base, heldout, heldout), 4),
                                       "lud": round(lm_loss(tuned, heldout, heldout), 4)},
                "heldout_units": {"base": unit_figures(base, held_in, heldout, held_units, recipe.lookahead),
                                  "lud": unit_figures(tuned, held_in, heldout, held_units, recipe.lookahead)},
                "base_card_heldout_loss": _base_card(target).get("heldout_loss"), "torch": torch.__version__}
        (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(readme(card))
    return out


def _as_hyperfit(recipe: LUDRecipe):
    """The hyperfit recipe's window sampler reads sequences, seq_len and seed."""
    from .hyperfit import HyperfitRecipe

    return HyperfitRecipe(sequences=recipe.windows, seq_len=recipe.seq_len, seed=recipe.seed, eval_prompts=0)


def readme(card: dict) -> str:
    u, lud = card["heldout_units"]["base"], card["heldout_units"]["lud"]
    lines = [f"# zoo:{card['name']}", "", card["recipe"]["description"], "",
             f"- base: `{card['base']}`; placeholder `{card['placeholder']['token']}` (id {card['placeholder']['id']}); "
             f"units: alpha {card['recipe']['alpha']}, at most {card['recipe']['lookahead']} tokens",
             f"- {card['architecture']}, {card['parameters']:,} parameters, fp16 safetensors",
             f"- held-out: {u['tokens_in_units']:.1%} of tokens in units, mean unit length {u['mean_length']}, "
             f"lengths {u['length_share']}",
             f"- held-out accuracy by position in a unit: base {u['position_accuracy']}, lud {lud['position_accuracy']}",
             f"- held-out loss {card['heldout_loss']} nats/token (base {card['base_heldout_loss']}) on "
             f"{card['recipe']['heldout_windows']} held-out windows of the whole context; on the {card['recipe']['heldout_windows']} figure windows: base "
             f"{card['heldout_plain_loss']['base']}, lud {card['heldout_plain_loss']['lud']}; reconfigured: base "
             f"{card['heldout_reconfigured_loss']['base']}, lud {card['heldout_reconfigured_loss']['lud']}",
             f"- train time {card['train_time_s']} s; command: `{card['command']}`", "",
             "## Recipe", "", "```json", json.dumps(card["recipe"], indent=2, sort_keys=True), "```", "",
             "Curves: `loss.png`; per-epoch log: `training_log.jsonl`.", ""]
    return "\n".join(lines)


def add_command(sub) -> None:
    from .cli import recipe_arguments

    p = sub.add_parser("lud", help="fine-tune a causal LM for Lexical Unit Decoding (arXiv 2405.15208)")
    p.add_argument("--target", default="zoo:code-target", help="model to fine-tune (directory or zoo:NAME)")
    p.add_argument("--out", help="output directory (default: the bundled zoo/checkpoints/code-target-lud for "
                                 "zoo:code-target, else ./<target name>-lud)")
    recipe_arguments(p, LUDRecipe)
    p.set_defaults(func=cmd_lud)


def cmd_lud(args) -> int:
    from .cli import command_line, default_head_name, recipe_from

    recipe = recipe_from(args, LUDRecipe)
    if args.out:
        out = args.out
    elif args.target == "zoo:code-target":
        from ..zoo import CHECKPOINTS_DIR

        out = str(CHECKPOINTS_DIR / "code-target-lud")
    else:
        out = str(Path.cwd() / f"{default_head_name(args.target)}-lud")
    path = run(args.target, out, recipe, command=command_line())
    card = json.loads((Path(path) / "card.json").read_text())
    print(json.dumps({"out": str(path), "train_loss_final": card["train_loss_final"],
                      "heldout_units": card["heldout_units"], "heldout_plain_loss": card["heldout_plain_loss"]},
                     indent=2))
    return 0
