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
on `windows` windows of `seq_len` tokens of the zoo code corpus's TRAIN split (code data; task data
below); runs longer than
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

Task data (`--data tasks`, the default for zoo:tasks-ar; train/taskdata.py): `windows` train-split
task examples drawn with the task recipe's weights (prompt + answer + end-of-text), and
`heldout_windows` test-split examples spread evenly over the tasks for the figures. Units are found
on the answer tokens only (the prompt is random list items: nothing there is for the model to
decode), and the loss is on the answer tokens only, as zoo:tasks-ar was trained. Rows are
right-padded with the pad token, which is also the placeholder: padding is kept out of everything
by masks, not by its id (the unit scope and the labels are the answer mask, the attention mask
marks it; padding only follows a row's last real token, which a causal model never reads), so a
placeholder inside a unit is an attended input and a pad after the answer is ignored.
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
from .taskdata import TaskRows, check_data

BUNDLED = ("zoo:code-target", "zoo:tasks-ar")  # targets whose LUD model is a bundled zoo checkpoint (<name>-lud)


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
    heldout_windows: int = 64  # held-out windows for the figures (tasks: test examples, split evenly over tasks)
    data: str = "code"  # code windows or task examples (train/taskdata.py); the CLI's default follows the target

    def __post_init__(self):
        check_data(self.data)
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


@dataclass(frozen=True)
class Rows:
    """Training or held-out rows: ids [N, T]; labels [N, T] (the ids, -100 where no loss);
    attention [N, T] or None (every token real); scope [N, T]: where units may lie (code: every
    token; tasks: the answer tokens, so never the prompt nor the padding)."""

    ids: torch.Tensor
    labels: torch.Tensor
    scope: torch.Tensor
    attention: torch.Tensor | None = None

    @classmethod
    def of_windows(cls, windows: torch.Tensor) -> "Rows":
        return cls(windows, windows, torch.ones_like(windows, dtype=torch.bool))

    @classmethod
    def of_tasks(cls, rows: TaskRows) -> "Rows":
        return cls(rows.ids, rows.labels(), rows.answer, rows.attention)

    def batches(self, inputs: torch.Tensor, size: int):
        """(index slice, inputs, labels, attention) per batch of `size` rows."""
        for i in range(0, len(self.ids), size):
            sl = slice(i, i + size)
            yield sl, inputs[sl], self.labels[sl], None if self.attention is None else self.attention[sl]


@torch.no_grad()
def confidences(model, rows: Rows, batch: int = 32) -> torch.Tensor:
    """p(x_t | x_<t) teacher-forced, [N, T]; 0 outside the rows' scope (column 0 is always 0:
    nothing predicts the first token)."""
    out = torch.zeros(rows.ids.shape, dtype=torch.float32)
    for sl, x, _, att in rows.batches(rows.ids, batch):
        logp = torch.log_softmax(model(input_ids=x, attention_mask=att).logits.float(), dim=-1)  # [B, T, V]
        out[sl, 1:] = logp[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1).exp()
    return out * rows.scope


def build(model, rows: Rows, recipe: LUDRecipe, placeholder: int):
    """Units found by `model` (inside the rows' scope) and the reconfigured inputs: (inputs [N, T],
    units per row)."""
    conf = confidences(model, rows)
    units = [find_units(c, recipe.alpha, recipe.lookahead) for c in conf]
    inputs = torch.stack([reconfigure(w, u, placeholder) for w, u in zip(rows.ids, units)])
    return inputs, units


@torch.no_grad()
def unit_figures(model, inputs: torch.Tensor, rows: Rows, units: list, lookahead: int) -> dict:
    """Unit length distribution, share of the scope's tokens in units, and the model's greedy
    accuracy at each position of a unit (1 = the unit's first token, from the real context)."""
    hits, seen = [0] * lookahead, [0] * lookahead
    for sl, x, _, att in rows.batches(inputs, 32):
        pred = model(input_ids=x, attention_mask=att).logits.argmax(-1)  # [B, T]
        for b, us in enumerate(units[sl]):
            for s, n in us:
                for j in range(n):  # the prediction of x_{s+j} is read at position s+j-1
                    seen[j] += 1
                    hits[j] += int(pred[b, s + j - 1] == rows.ids[sl][b, s + j])
    lengths = Counter(n for us in units for _, n in us)
    total = sum(lengths.values())
    return {"units": total, "tokens_in_units": round(sum(k * v for k, v in lengths.items()) / int(rows.scope.sum()), 4),
            "length_share": {str(k): round(v / max(1, total), 4) for k, v in sorted(lengths.items())},
            "mean_length": round(sum(k * v for k, v in lengths.items()) / max(1, total), 3),
            "position_accuracy": [round(h / s, 4) if s else None for h, s in zip(hits, seen)],
            "position_count": seen}


@torch.no_grad()
def lm_loss(model, inputs: torch.Tensor, rows: Rows, batch: int = 32) -> float:
    """Mean next-token cross-entropy of the rows' labels given `inputs` (nats per labelled token)."""
    was, total, n = model.training, 0.0, 0
    model.eval()
    for _, x, y, att in rows.batches(inputs, batch):
        logits = model(input_ids=x, attention_mask=att).logits.float()[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y[:, 1:], reduction="sum", ignore_index=-100)
        total, n = total + float(nll), n + int((y[:, 1:] != -100).sum())
    model.train(was)
    return total / n


def fit(model, inputs, rows: Rows, held_in, held: Rows, recipe: LUDRecipe, log, progress=True) -> None:
    """Fine-tune `model` in place on (inputs, rows' labels) [N, T]; log(row) once per epoch."""
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
            att = None if rows.attention is None else rows.attention[idx]
            loss = model(input_ids=inputs[idx], labels=rows.labels[idx], attention_mask=att).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            bar.update(1)
            bar.set_postfix(loss=round(loss.item(), 3))
        row = {"epoch": epoch + 1, "train_loss": round(total / len(inputs), 4),
               "heldout_loss": round(lm_loss(model, held_in, held), 4), "time_s": round(time.time() - t0, 1)}
        log(row)
    bar.close()
    model.eval()


def placeholder_id(tok) -> int:
    if tok is None or tok.pad_token_id is None:
        raise DecodeLabError("lud needs a placeholder token: the tokenizer has no pad token")
    return int(tok.pad_token_id)


def load_rows(target: str, tok, recipe: LUDRecipe, max_len: int | None, windows: torch.Tensor | None):
    """(train rows, held-out figure rows, held-out rows of the whole context) for the recipe's data."""
    if recipe.data == "tasks":
        from ..zoo import tasks
        from .taskdata import task_recipe, task_rows

        per_task = math.ceil(recipe.heldout_windows / len(task_recipe(target).tasks or tasks.TASKS))
        train = Rows.of_tasks(task_rows(tok, "train", recipe.windows, recipe.seed, target))
        held = Rows.of_tasks(task_rows(tok, "test", per_task, recipe.seed, target, per_task=True))
        return train, held, held
    from ..zoo.batches import code_windows
    from .hyperfit import training_windows

    if windows is None:
        windows = training_windows(tok, _as_hyperfit(recipe), max_len or recipe.seq_len)
    heldout = code_windows("heldout", tok, recipe.seq_len, recipe.heldout_windows)
    full = code_windows("heldout", tok, max_len or 256, recipe.heldout_windows)  # the whole context
    return Rows.of_windows(windows), Rows.of_windows(heldout), Rows.of_windows(full)


def run(target: str, out: str | Path, recipe: LUDRecipe, progress: bool = True, command: str = "",
        windows: torch.Tensor | None = None) -> Path:
    """Fine-tune zoo model or directory `target` for LUD and write the checkpoint to `out` (whole or
    not at all). windows (code data): the training windows [N, T] (default: `recipe.windows`
    windows of `recipe.seq_len` tokens drawn from the train split)."""
    from .. import api
    from ..zoo.staging import check_replaceable, staged_dir
    from ..zoo.trainlog import TrainLog
    from .curves import epoch_loss_plot

    out = Path(out)
    check_replaceable(out)
    base_lm = api.load(target)
    tok = base_lm.tokenizer
    pad = placeholder_id(tok)
    rows, held, full = load_rows(target, tok, recipe, base_lm.max_length, windows)
    base = base_lm.model
    inputs, units = build(base, rows, recipe, pad)
    held_in, held_units = build(base, held, recipe, pad)
    model = copy.deepcopy(base)
    torch.manual_seed(recipe.seed)
    with staged_dir(out) as tmp, TrainLog(tmp / "training_log.jsonl") as log:
        log.emit({"epoch": 0, "train_loss": round(lm_loss(model, inputs, rows), 4),
                  "heldout_loss": round(lm_loss(model, held_in, held), 4), "time_s": 0.0})
        fit(model, inputs, rows, held_in, held, recipe, log.emit, progress)
        model.config.lud = {"placeholder_id": pad, "lookahead": recipe.lookahead, "alpha": recipe.alpha}
        model.to(torch.float16).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        model.to(torch.float32)
        what = "answers of task examples" if recipe.data == "tasks" else "windows"
        epoch_loss_plot(log.rows, tmp / "loss.png", f"lud {target}", "loss (nats/token)",
                        f"train (reconfigured {what})")
        tuned = api.load(str(tmp)).model  # the saved fp16 weights, run in float32
        figures = {"train_units": sum(len(u) for u in units),
                   "train_tokens_in_units": round(sum(n for us in units for _, n in us) / int(rows.scope.sum()), 4),
                   "heldout_loss": round(lm_loss(tuned, full.ids, full, 8), 4),
                   "base_heldout_loss": round(lm_loss(base, full.ids, full, 8), 4),
                   "heldout_plain_loss": {"base": round(lm_loss(base, held.ids, held), 4),
                                          "lud": round(lm_loss(tuned, held.ids, held), 4)},
                   "heldout_units": {"base": unit_figures(base, held_in, held, held_units, recipe.lookahead),
                                     "lud": unit_figures(tuned, held_in, held, held_units, recipe.lookahead)}}
        card = _card(target, out, recipe, model, tok, pad, command, log, figures)
        (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(readme(card))
    return out


def _card(target, out: Path, recipe: LUDRecipe, model, tok, pad: int, command: str, log, figures: dict) -> dict:
    from .hyperfit import _base_card

    return {"name": out.name, "base": target, "kind": "causal", "architecture": type(model).__name__,
            "auto_class": "AutoModelForCausalLM", "dtype": "float16", "command": command,
            "recipe": {"description": "Lexical Unit Decoding (arXiv 2405.15208): the base fine-tuned to predict "
                                      "a lexical unit per step from placeholder tokens; decode it with the "
                                      "lud method, or draft with it (lud_lossless).",
                       **dataclasses.asdict(recipe)},
            "placeholder": {"id": pad, "token": tok.convert_ids_to_tokens(pad)},
            "parameters": sum(p.numel() for p in model.parameters()), "epochs": recipe.epochs,
            "train_loss_first_epoch": log.rows[1]["train_loss"], "train_loss_final": log.rows[-1]["train_loss"],
            "train_time_s": log.elapsed(),
            "heldout_reconfigured_loss": {"base": log.rows[0]["heldout_loss"], "lud": log.rows[-1]["heldout_loss"]},
            **figures, "base_card_heldout_loss": _base_card(target).get("heldout_loss"), "torch": torch.__version__}


def _as_hyperfit(recipe: LUDRecipe):
    """The hyperfit recipe's window sampler reads sequences, seq_len and seed."""
    from .hyperfit import HyperfitRecipe

    return HyperfitRecipe(sequences=recipe.windows, seq_len=recipe.seq_len, seed=recipe.seed, eval_prompts=0)


def readme(card: dict) -> str:
    u, lud, r = card["heldout_units"]["base"], card["heldout_units"]["lud"], card["recipe"]
    tasks = r.get("data") == "tasks"
    held = (f"held-out (test-split task examples, {r['heldout_windows']} spread over the tasks; units and losses on "
            "the answer tokens only)" if tasks else "held-out")
    loss = (f"- held-out loss on the answers {card['heldout_loss']} nats/token (base {card['base_heldout_loss']})"
            if tasks else
            f"- held-out loss {card['heldout_loss']} nats/token (base {card['base_heldout_loss']}) on "
            f"{r['heldout_windows']} held-out windows of the whole context; on the {r['heldout_windows']} figure "
            f"windows: base {card['heldout_plain_loss']['base']}, lud {card['heldout_plain_loss']['lud']}")
    lines = [f"# zoo:{card['name']}", "", r["description"], "",
             f"- base: `{card['base']}`; data: {r.get('data', 'code')}; placeholder `{card['placeholder']['token']}` "
             f"(id {card['placeholder']['id']}); units: alpha {r['alpha']}, at most {r['lookahead']} tokens",
             f"- {card['architecture']}, {card['parameters']:,} parameters, fp16 safetensors",
             f"- {held}: {u['tokens_in_units']:.1%} of tokens in units, mean unit length {u['mean_length']}, "
             f"lengths {u['length_share']}",
             f"- held-out accuracy by position in a unit: base {u['position_accuracy']}, lud {lud['position_accuracy']}",
             f"{loss}; reconfigured: base {card['heldout_reconfigured_loss']['base']}, "
             f"lud {card['heldout_reconfigured_loss']['lud']}",
             f"- train time {card['train_time_s']} s; command: `{card['command']}`", "",
             "## Recipe", "", "```json", json.dumps(r, indent=2, sort_keys=True), "```", "",
             "Curves: `loss.png`; per-epoch log: `training_log.jsonl`.", ""]
    return "\n".join(lines)


def add_command(sub) -> None:
    from .cli import recipe_arguments
    from .taskdata import add_data_argument

    p = sub.add_parser("lud", help="fine-tune a causal LM for Lexical Unit Decoding (arXiv 2405.15208)")
    p.add_argument("--target", default="zoo:code-target", help="model to fine-tune (directory or zoo:NAME)")
    p.add_argument("--out", help="output directory (default: the bundled zoo/checkpoints/<name>-lud for "
                                 f"{' and '.join(BUNDLED)}, else ./<target name>-lud)")
    add_data_argument(p)
    recipe_arguments(p, LUDRecipe, skip=("data",))
    p.set_defaults(func=cmd_lud)


def default_out(target: str) -> Path:
    """The bundled checkpoint for the zoo models that have one (BUNDLED), else ./<target name>-lud."""
    from .cli import default_head_name

    if target in BUNDLED:
        from ..zoo import CHECKPOINTS_DIR

        return CHECKPOINTS_DIR / f"{target[4:]}-lud"
    return Path.cwd() / f"{default_head_name(target)}-lud"


def cmd_lud(args) -> int:
    from .cli import command_line, recipe_from
    from .taskdata import resolve_data

    resolve_data(args)
    recipe = recipe_from(args, LUDRecipe)
    path = run(args.target, args.out or str(default_out(args.target)), recipe, command=command_line())
    card = json.loads((Path(path) / "card.json").read_text())
    print(json.dumps({"out": str(path), "train_loss_final": card["train_loss_final"],
                      "heldout_units": card["heldout_units"], "heldout_plain_loss": card["heldout_plain_loss"]},
                     indent=2))
    return 0
