"""FiRST's routers: trained on the frozen target with soft gating and a sparsity weight
(`decodelab train first --target zoo:code-target --sparsity LAMBDA`).

Jain et al. 2024, "FiRST: Finetuning Router-Selective Transformers for Input-Adaptive Latency
Reduction", arXiv 2410.12513. Each training window of the zoo code corpus's TRAIN split is cut at
a random point K into a prompt (tokens < K) and a continuation, as decoding sees them
(methods/first.py): the prompt runs every layer and router i reads it, G_i = the mean of its gates
over the prompt's tokens; the continuation's rows of layer i become x + G_i (f_i(x) - x) (soft
gating; forward hooks on the frozen model's decoder layers, removed after each forward). Loss = the
LM loss of the continuation + lambda * mean_i G_i. Only the routers train (AdamW, constant lr).

Held-out figures (held-out split windows, cut the same way with a fixed seed): the base model's
loss on the continuations, the soft-gated loss, the loss with HARD skipping at the threshold (G_i
rounded to 1 if >= threshold else 0: exactly what decoding does), the skip rate of each layer
(the share of windows whose prompt makes it skipped), the mean number of layers skipped, and the
skip sets seen. A routers directory (written whole or not at all, zoo.staging): model.safetensors
and config.json (methods.first.save_routers), card.json, training_log.jsonl, loss.png.

Task data (`--data tasks`, the default for zoo:tasks-ar; train/taskdata.py): `windows` train-split
task examples (prompt + answer + end-of-text, the task recipe's weights) cut at their own
prompt/answer split, the paper's setting: the routers read the prompt, the answer is the response
whose layers are skipped; held-out: `heldout_windows` test-split examples spread evenly over the
tasks. Rows are right-padded; the continuation loss stops at each row's end (padding is never
predicted, and a causal model never reads it for a real row); seq_len, min_prompt and min_new are
for code windows only. The answers' LM loss is ~30x below code's (0.09 nats/token on tasks-ar), so
the useful lambdas are too: the bundled tasks-ar-first-{0.005,0.01,0.02,0.05,0.2} (1536 examples,
about a minute each) skip 0.005-3.1 layers of 4; lambda 2 skips all four on every prompt.

Deviations: no LoRA (the paper's optional fine-tuning of the model); on code, the random prompt cut
stands in for the paper's prompt/response split (the corpus has no prompts); hooks bypass only the rows
past the cut, so a window's prompt rows equal the base model's at every layer, as in decoding.
Not in the paper: `--straight-through` trains with the hard gates decoding uses (forward: G
rounded at the threshold; gradient: the soft G's), an experiment on the gap between soft gating
and hard skipping (the bundled heads are trained without it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DecodeLabError
from ..methods.first import DEFAULT_SPARSITY, Routers, save_routers
from .acceptance_head import HEADS_DIR
from .taskdata import check_data


@dataclass(frozen=True, kw_only=True)
class FiRSTRecipe:
    sparsity: float = DEFAULT_SPARSITY  # lambda: weight of mean_i G_i in the loss
    threshold: float = 0.5  # held-out hard skipping: skip layer i when G_i < threshold
    windows: int = 768  # train-split windows (one epoch)
    seq_len: int = 256  # tokens per window (at most the model's context)
    min_prompt: int = 16  # the prompt cut K is uniform in [min_prompt, seq_len - min_new]
    min_new: int = 32
    batch_size: int = 16
    lr: float = 5e-2
    epochs: int = 1
    heldout_windows: int = 64
    eval_every: int = 12  # optimiser steps between held-out evaluations (and at the end)
    straight_through: bool = False  # not the paper's: train with hard gates (straight-through gradient)
    seed: int = 0
    data: str = "code"  # code windows or task examples (train/taskdata.py); the CLI's default follows the target

    def __post_init__(self):
        check_data(self.data)
        counts = (self.windows, self.seq_len, self.batch_size, self.epochs, self.heldout_windows, self.eval_every)
        if min(counts) < 1 or self.min_prompt < 1 or self.min_new < 1:
            raise DecodeLabError("first recipe: counts must be positive")
        if self.min_prompt + self.min_new > self.seq_len:
            raise DecodeLabError(f"first recipe: min_prompt + min_new must be at most seq_len={self.seq_len}")
        if self.sparsity < 0 or not 0 <= self.threshold <= 1 or not 0 < self.lr < 1:
            raise DecodeLabError(f"first recipe: sparsity must be >= 0, threshold in [0, 1] and lr in (0, 1); got "
                                 f"{self.sparsity}, {self.threshold}, {self.lr}")


def cuts(n: int, recipe: FiRSTRecipe, seed: int) -> torch.Tensor:
    """Prompt lengths K [n], uniform in [min_prompt, seq_len - min_new]."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(recipe.min_prompt, recipe.seq_len - recipe.min_new + 1, (n,), generator=gen)


@contextlib.contextmanager
def gated(model, routers: Routers, k: torch.Tensor, threshold: float | None = None, straight: bool = False):
    """Inside, the model's forwards gate every decoder layer's rows from k[b] on: y = x + G (f(x) - x),
    G [B] = the mean gate of rows < k[b] (rounded at `threshold` when given: hard skipping; with
    `straight`, its gradient is the soft G's: the straight-through estimator). Yields the list the
    hooks append each layer's G to. k: [B] prompt lengths."""
    seen: list[torch.Tensor] = []

    def hook_for(i):
        def hook(module, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]  # [B, T, H] the layer's input
            y = out[0] if isinstance(out, tuple) else out
            prompt = torch.arange(x.shape[1])[None, :] < k[:, None]  # [B, T]
            g = (routers.gate(x, i) * prompt).sum(1) / prompt.sum(1)  # [B]
            if threshold is not None:
                hard = (g >= threshold).float()
                g = hard + g - g.detach() if straight else hard
            seen.append(g)
            w = torch.where(prompt, torch.ones_like(g)[:, None], g[:, None])[..., None].to(y.dtype)  # [B, T, 1]
            y = x + w * (y - x)
            return (y, *out[1:]) if isinstance(out, tuple) else y
        return hook

    layers = model.base_model.layers
    hooks = [layer.register_forward_hook(hook_for(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def continuation_loss(model, x: torch.Tensor, k: torch.Tensor, ends: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of the tokens after each prompt (predicted from rows >= k), up
    to each row's end (ends [B]: real lengths of right-padded rows; None: every row is real)."""
    logits = model(input_ids=x).logits.float()[:, :-1]  # [B, T-1, V]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # [B, T-1]
    t = torch.arange(x.shape[1] - 1)[None, :]
    cont = t >= k[:, None]
    if ends is not None:
        cont = cont & (t + 1 < ends[:, None])  # the predicted token x[t + 1] is real
    return (nll * cont).sum() / cont.sum()


@torch.no_grad()
def heldout(model, routers: Routers, windows: torch.Tensor, k: torch.Tensor, threshold: float,
            batch: int = 16, ends: torch.Tensor | None = None) -> dict:
    """Base, soft and hard-skipping continuation losses, per-layer skip rates and skip sets."""
    tot = {"base": 0.0, "soft": 0.0, "hard": 0.0}
    gates, hard = [], []
    for j in range(0, len(windows), batch):
        x, kk, w = windows[j:j + batch], k[j:j + batch], len(windows[j:j + batch])
        e = None if ends is None else ends[j:j + batch]
        tot["base"] += float(continuation_loss(model, x, kk, e)) * w
        with gated(model, routers, kk) as g:
            tot["soft"] += float(continuation_loss(model, x, kk, e)) * w
        gates.append(torch.stack(g, 1))  # [B, L]
        with gated(model, routers, kk, threshold) as g:
            tot["hard"] += float(continuation_loss(model, x, kk, e)) * w
        hard.append(torch.stack(g, 1))
    gates, keep = torch.cat(gates), torch.cat(hard)  # [N, L]
    sets = Counter(",".join(str(i) for i in range(keep.shape[1]) if not keep[b, i]) or "-" for b in range(len(keep)))
    return {**{f"{name}_loss": round(v / len(windows), 4) for name, v in tot.items()},
            "mean_gate": [round(float(v), 4) for v in gates.mean(0)],
            "skip_rate": [round(float(v), 4) for v in 1 - keep.mean(0)],
            "mean_layers_skipped": round(float((1 - keep).sum(1).mean()), 3),
            "skip_sets": dict(sets.most_common())}


@dataclass(frozen=True)
class Cut:
    """Rows cut into prompt and continuation: x [N, T], k [N] prompt lengths, ends [N] real lengths
    (None: every row is real, code windows)."""

    x: torch.Tensor
    k: torch.Tensor
    ends: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, idx) -> tuple:
        return self.x[idx], self.k[idx], None if self.ends is None else self.ends[idx]


def load_data(tokenizer, recipe: FiRSTRecipe, target: str, gen: torch.Generator) -> tuple[Cut, Cut]:
    """(train, held-out) rows. Code: windows cut at a random K; tasks: task examples cut at their
    own prompt/answer split (the routers read the prompt, the answer is what decoding generates).
    gen: draws the code windows (then the training order)."""
    if recipe.data == "tasks":
        from ..zoo import tasks
        from .taskdata import task_recipe, task_rows

        per_task = math.ceil(recipe.heldout_windows / len(task_recipe(target).tasks or tasks.TASKS))
        train = task_rows(tokenizer, "train", recipe.windows, recipe.seed, target)
        held = task_rows(tokenizer, "test", per_task, recipe.seed, target, per_task=True)
        return tuple(Cut(r.ids, r.prompt_len, r.length) for r in (train, held))
    from ..zoo.batches import code_windows

    windows = code_windows("train", tokenizer, recipe.seq_len)
    if recipe.windows > len(windows):
        raise DecodeLabError(f"the train split has {len(windows)} windows of {recipe.seq_len} tokens, fewer than "
                             f"windows={recipe.windows}")
    windows = windows[torch.randperm(len(windows), generator=gen)[:recipe.windows]]
    held = code_windows("heldout", tokenizer, recipe.seq_len, recipe.heldout_windows)
    train = Cut(windows, cuts(len(windows), recipe, recipe.seed + 1))
    return train, Cut(held, cuts(len(held), recipe, recipe.seed + 2))


def train(model, tokenizer, recipe: FiRSTRecipe, log=None, progress: bool = True,
          target: str = "zoo:tasks-ar") -> tuple[Routers, dict]:
    """Fit routers on the frozen model; returns them and the held-out figures. target: whose task
    mix the task rows follow (data tasks)."""
    from tqdm import tqdm

    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = model.config.get_text_config(decoder=True)
    routers = Routers(cfg.num_hidden_layers, cfg.hidden_size)
    gen = torch.Generator().manual_seed(recipe.seed)
    rows, held = load_data(tokenizer, recipe, target, gen)
    opt = torch.optim.AdamW(routers.parameters(), lr=recipe.lr, weight_decay=0.0)
    per_epoch = math.ceil(len(rows) / recipe.batch_size)
    bar = tqdm(total=per_epoch * recipe.epochs, desc=f"first routers (lambda {recipe.sparsity:g})", unit="step",
               disable=not progress)
    emit = log or (lambda row: None)

    def evaluate():
        return heldout(model, routers, held.x, held.k, recipe.threshold, ends=held.ends)
    first = evaluate()
    soft = first["soft_loss"] + recipe.sparsity * sum(first["mean_gate"]) / len(first["mean_gate"])
    emit({"epoch": 0.0, "step": 0, "train_loss": round(soft, 4), "heldout_loss": first["hard_loss"],
          "skip_rate": first["skip_rate"]})
    step, window_loss = 0, []
    for _ in range(recipe.epochs):
        order = torch.randperm(len(rows), generator=gen)
        for j in range(0, len(rows), recipe.batch_size):
            x, k, ends = rows.rows(order[j:j + recipe.batch_size])
            hard = recipe.threshold if recipe.straight_through else None
            with gated(model, routers, k, hard, straight=True) as g:
                lm = continuation_loss(model, x, k, ends)
            gate = torch.stack(g).mean()
            loss = lm + recipe.sparsity * gate
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            window_loss.append(float(loss.detach()))
            bar.update(1)
            lm, gate = float(lm.detach()), float(gate.detach())
            bar.set_postfix(lm=f"{lm:.3f}", gate=f"{gate:.3f}")
            if step % recipe.eval_every == 0 or step == per_epoch * recipe.epochs:
                ev = evaluate()
                emit({"epoch": round(step / per_epoch, 4), "step": step, "train_loss": round(sum(window_loss) /
                      len(window_loss), 4), "heldout_loss": ev["hard_loss"], "lm": round(lm, 4),
                      "gate": round(gate, 4), "skip_rate": ev["skip_rate"]})
                window_loss = []
    bar.close()
    return routers.eval(), {"heldout": evaluate(), "steps": step, "train_windows": len(rows),
                            "heldout_windows": len(held)}


def default_out(target: str, sparsity: float) -> Path:
    from .cli import default_head_name

    return HEADS_DIR / f"{default_head_name(target)}-first-{sparsity:g}"


def run(target: str, out: str | Path, recipe: FiRSTRecipe, progress: bool = True, command: str = "") -> Path:
    """Train routers for `target` (zoo:NAME or a directory) and write them to `out`, whole or not at all."""
    from .. import api
    from ..models.hf import HFCausalLM
    from ..zoo.staging import check_replaceable, staged_dir
    from ..zoo.trainlog import TrainLog
    from .curves import epoch_loss_plot

    out = Path(out)
    check_replaceable(out)
    lm = api.load(target)
    if not isinstance(lm, HFCausalLM) or lm.tokenizer is None or "layer_skip" not in lm.capabilities:
        raise DecodeLabError(f"FiRST routers are trained on a transformers causal LM with a tokenizer whose decoder "
                             f"layers can be skipped; {target} is not one")
    if recipe.data == "code" and recipe.seq_len > (lm.max_length or recipe.seq_len):
        raise DecodeLabError(f"seq_len {recipe.seq_len} exceeds the model's context of {lm.max_length} tokens")
    torch.manual_seed(recipe.seed)
    with staged_dir(out) as tmp, TrainLog(tmp / "training_log.jsonl") as log:
        routers, figures = train(lm.model, lm.tokenizer, recipe, log.emit, progress, target)
        save_routers(tmp, routers, {"model": target, "sparsity": recipe.sparsity, "threshold": recipe.threshold})
        epoch_loss_plot(log.rows, tmp / "loss.png", f"FiRST routers for {target}, lambda {recipe.sparsity:g}",
                        "loss (nats/token)", "train: LM + lambda mean G (soft)")
        card = {"name": out.name, "model": target, "sparsity": recipe.sparsity, "threshold": recipe.threshold,
                "parameters": sum(p.numel() for p in routers.parameters()), "command": command, **figures,
                "fit_time_s": log.elapsed(), "recipe": dataclasses.asdict(recipe), "torch": torch.__version__,
                "description": "FiRST routers (arXiv 2410.12513): one linear router per decoder layer on its "
                               "RMS-normalised input; the prompt's mean gate G_i decides whether generated tokens "
                               "skip layer i (G_i < threshold). Held-out: continuation losses of the base model, "
                               "soft gating and hard skipping (as decoding does), per-layer skip rates; the "
                               "plot's held-out curve is the hard-skipping loss."}
        (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return out


def add_command(sub) -> None:
    from .cli import recipe_arguments
    from .taskdata import add_data_argument

    p = sub.add_parser("first", help="train FiRST's layer-skipping routers (arXiv 2410.12513) for a causal LM")
    p.add_argument("--target", required=True, help="the frozen target (directory or zoo:NAME)")
    p.add_argument("--out", help="output directory (default: the bundled zoo/heads/<target name>-first-<sparsity>)")
    add_data_argument(p)
    recipe_arguments(p, FiRSTRecipe, skip=("data",))
    p.set_defaults(func=cmd_first)


def cmd_first(args) -> int:
    from .cli import command_line, recipe_from
    from .taskdata import resolve_data

    resolve_data(args)
    recipe = recipe_from(args, FiRSTRecipe)
    out = args.out or str(default_out(args.target, recipe.sparsity))
    t0 = time.time()
    path = run(args.target, out, recipe, command=command_line())
    card = json.loads((Path(path) / "card.json").read_text())
    print(json.dumps({"out": str(path), "seconds": round(time.time() - t0, 1), "heldout": card["heldout"]}, indent=2))
    return 0
