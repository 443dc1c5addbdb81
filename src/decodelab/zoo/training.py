"""Training loop shared by every zoo recipe (causal LM and masked diffusion LM).

Reproducible: every random draw comes from generators seeded with ``seed``; on CPU with a
fixed thread count the same command gives the same checkpoint. A run writes, into a
hidden directory next to ``out_dir`` that replaces ``out_dir`` only once complete
(``zoo.staging``: an error or Ctrl-C leaves ``out_dir`` as it was): the model
(``save_pretrained``, safetensors, fp16), the tokenizer, ``training_log.jsonl`` (one JSON
object per logged step or evaluation), ``loss.png``, ``card.json`` and a model card ``README.md``.

Graceful stop: create a file ``STOP`` in ``out_dir`` (``mkdir -p`` it first on a fresh
run); the run evaluates, keeps the best checkpoint so far and finishes as usual.

Threads: ``torch.set_num_threads`` is set from the environment variable
``DECODELAB_NUM_THREADS`` when present (the bundled checkpoints were trained with 1).

Precision: ``precision="fp32"`` (the default; every bundled checkpoint) trains in float32;
``"bf16"`` runs each training forward and backward under ``torch.autocast`` in bfloat16 (the
weights, gradients and optimiser stay float32), for CPUs with bfloat16 units (AVX512-BF16, AMX:
code-target-l's recipe at 256 tokens ran 1.6-2x faster on such a 2-core machine) and GPUs.
Held-out losses, early stopping and the card's figures are measured in float32 either way.

The pieces live in ``modeling`` (build/load), ``batches``, ``losses``, ``heldout``
(evaluation and card figures), ``trainlog`` and ``staging``; their names stay importable here.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from decodelab.errors import DecodeLabError
from decodelab.zoo.batches import CodeBatches, TaskBatches, code_stream, encode_example
from decodelab.zoo.heldout import (final_figures, heldout_code_loss, quick_task_accuracy, task_heldout_loss,
                                   train_sample_loss)
from decodelab.zoo.losses import MIN_T, Loss, causal_loss, mdlm_loss, objective, sample_t
from decodelab.zoo.modeling import auto_class_name, build_model, count_params, load_checkpoint
from decodelab.zoo.recipes import Recipe
from decodelab.zoo.staging import STOP_FILE, staged_dir
from decodelab.zoo.trainlog import TrainLog, plot_log

__all__ = [  # the names this module has always offered, wherever they live now
    "MIN_T", "CodeBatches", "Loss", "TaskBatches", "build_model", "causal_loss", "code_stream", "count_params",
    "encode_example", "final_figures", "heldout_code_loss", "mdlm_loss", "plot_log", "quick_task_accuracy", "run",
    "sample_t", "task_heldout_loss", "train_sample_loss",
]


PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class RunArgs:
    """How a run was asked for: recorded in the log and, as a command line, on the card."""

    device: str
    tokens: int | None
    seed: int
    out: Path
    max_steps: int | None
    init_from: str | Path | None
    threads: str | None  # DECODELAB_NUM_THREADS
    stage: str = "all"
    precision: str = "fp32"

    def command(self, name: str) -> str:
        return ((f"DECODELAB_NUM_THREADS={self.threads} " if self.threads else "")
                + f"decodelab zoo train {name} --device {self.device} --seed {self.seed} --out {self.out}"
                + (f" --tokens {self.tokens}" if self.tokens is not None else "")
                + (f" --max-steps {self.max_steps}" if self.max_steps is not None else "")
                + (f" --init-from {self.init_from}" if self.init_from is not None else "")
                + (f" --stage {self.stage}" if self.stage != "all" else "")
                + (f" --precision {self.precision}" if self.precision != "fp32" else ""))


@dataclass(frozen=True)
class Plan:
    budget: int  # tokens to see
    tokens_per_step: int | None  # code batches: fixed; task batches vary (the tokens the loss is on count)
    total_steps: int
    stop_at_budget: bool  # task recipes without a step cap stop once the budget is seen


def plan_steps(recipe: Recipe, tokens: int | None, max_steps: int | None) -> Plan:
    budget = int(tokens if tokens is not None else recipe.tokens)
    tokens_per_step = recipe.batch_size * recipe.seq_len if recipe.data == "code" else None
    est_per_step = tokens_per_step or recipe.batch_size * recipe.est_tokens_per_example
    total_steps = max(1, math.ceil(budget / est_per_step))
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    return Plan(budget, tokens_per_step, total_steps, tokens_per_step is None and max_steps is None)


def make_optimizer(model, recipe: Recipe) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # weight decay on the matrices only: not on embeddings, norms or vectors
        (decay if p.dim() >= 2 and "embed" not in name and "norm" not in name.lower() else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )


def lr_at(recipe: Recipe, step: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``recipe.lr``."""
    warm = min(recipe.warmup, max(1, total_steps // 10))
    if step < warm:
        return recipe.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total_steps - warm)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


class BestKeeper:
    """Held-out evaluations during training; keeps a copy of the weights that scored best."""

    def __init__(self, model, recipe: Recipe, tok, device: str, log: TrainLog, evaluate: bool):
        self.model, self.recipe, self.tok, self.device, self.log, self.evaluate = model, recipe, tok, device, log, evaluate
        self.loss, self.state, self.step, self.tokens = float("inf"), None, 0, 0
        self.bad = 0  # evaluations since the last improvement
        self.last, self.last_step = None, None

    def _measure(self) -> tuple[float, object]:
        m, r, tok = self.model, self.recipe, self.tok
        if r.data == "code":
            h = heldout_code_loss(m, r, tok, self.device, max_windows=r.eval_windows)
            return (h if r.kind == "causal" else h["bound"]), h
        val = task_heldout_loss(m, r, tok, self.device)
        return val, ({"loss": val, "quick_accuracy": quick_task_accuracy(m, r, tok)} if self.evaluate else {"loss": val})

    def __call__(self, step: int, seen: int) -> float:
        val, detail = self._measure()
        self.log.emit({"kind": "eval", "step": step, "tokens": seen, "heldout_loss": val, "detail": detail,
                       "elapsed_s": self.log.elapsed()})
        if val < self.loss:
            self.loss, self.state, self.step, self.tokens = val, copy.deepcopy(self.model.state_dict()), step, seen
            self.bad = 0
        else:
            self.bad += 1
        self.last, self.last_step = val, step
        return val

    def out_of_patience(self) -> bool:
        return bool(self.recipe.patience) and self.bad >= self.recipe.patience

    def restore(self) -> None:
        if self.state is not None:
            self.model.load_state_dict(self.state)


def train_step(model, opt, batch, recipe: Recipe, device: str, mask_id: int, gen: torch.Generator, lr: float,
               precision: str = "fp32") -> Loss:
    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        r = objective(model, recipe.kind, batch, device, mask_id, gen, recipe.t_sampler)
    opt.zero_grad(set_to_none=True)
    r.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return r


def _should_stop(keeper: BestKeeper, recipe: Recipe, plan: Plan, steps: int, seen: int, stop_file: Path) -> bool:
    """Evaluate when due; True to end the run (early stop, STOP file, budget seen)."""
    log = keeper.log
    if steps % recipe.eval_every == 0 or steps == plan.total_steps:
        keeper(steps, seen)
        if keeper.out_of_patience():
            log.emit({"kind": "early_stop", "step": steps, "tokens": seen})
            return True
    if stop_file.exists():  # graceful stop: keep the best checkpoint so far
        if keeper.last_step != steps:
            keeper(steps, seen)
        log.emit({"kind": "stopped", "step": steps, "tokens": seen})
        stop_file.unlink(missing_ok=True)
        return True
    if plan.stop_at_budget and seen >= plan.budget:
        keeper(steps, seen)
        return True
    return False


def train_loop(model, recipe: Recipe, tok, batches, plan: Plan, gen: torch.Generator, keeper: BestKeeper,
               device: str, stop_file: Path, progress: bool, offset: int = 0,
               precision: str = "fp32") -> tuple[int, int]:
    """Optimise ``model`` on ``batches`` until ``plan`` or a stop; returns (steps, tokens seen,
    counted from ``offset``: the tokens of earlier stages)."""
    from tqdm import tqdm

    opt = make_optimizer(model, recipe)
    bar = tqdm(range(plan.total_steps), desc=f"zoo train {recipe.name}", disable=not progress, dynamic_ncols=True)
    steps, seen, ema = 0, offset, None
    for step in bar:
        lr = lr_at(recipe, step, plan.total_steps)
        r = train_step(model, opt, next(batches), recipe, device, tok.mask_token_id, gen, lr, precision)
        steps, seen = step + 1, seen + (plan.tokens_per_step or r.tokens)
        lv = float(r.loss.detach())
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % recipe.log_every == 0 or steps == plan.total_steps:
            keeper.log.emit({"kind": "train", "step": step, "tokens": seen, "loss": lv, "loss_ema": ema, "lr": lr,
                             "elapsed_s": keeper.log.elapsed()})
        if _should_stop(keeper, recipe, plan, steps, seen, stop_file):
            break
        bar.set_postfix(loss=f"{ema:.3f}", heldout=f"{keeper.last:.3f}" if keeper.last is not None else "-")
    bar.close()
    return steps, seen


def save_checkpoint(model, tok, recipe: Recipe, last: Recipe, ckpt: Path, args: RunArgs, facts: dict,
                    train_losses: list[float], evaluate: bool) -> None:
    """The fp16 weights, the tokenizer and the card (``facts`` + the measured figures) into ``ckpt``.
    last: the recipe of the last stage run (its windows are the held-out figures'); with a context
    stage, the held-out loss on the main stage's shorter windows too (comparable with one-stage cards)."""
    from decodelab.zoo import card as card_mod
    from decodelab.zoo.corpus import python_version

    model.eval()
    model = model.to("cpu").to(torch.float16)
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    card = {
        "name": recipe.name,
        "kind": recipe.kind,
        "architecture": type(model).__name__,
        "auto_class": auto_class_name(recipe),
        "dtype": "float16",
        "seed": args.seed,
        "device": args.device,
        "precision": args.precision,
        **facts,
        "python": python_version(),
        "torch": torch.__version__,
        "recipe": recipe.describe(),
        "command": args.command(recipe.name),
    }
    card.update(final_figures(last, tok, ckpt, train_losses, evaluate=evaluate, device=args.device))
    if recipe.context is not None:
        short = final_figures(recipe, tok, ckpt, [], evaluate=evaluate, device=args.device)
        card[f"heldout_loss_{recipe.seq_len}"] = short["heldout_loss"]
    card_mod.write_card(ckpt, card)


def _set_threads() -> str | None:
    threads = os.environ.get("DECODELAB_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    return threads


def _seed_all(seed: int) -> torch.Generator:
    """Seed the global generators (a fresh model's initialisation draws from torch's) and
    return the run's own generator (batches, masks)."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def run(
    recipe: Recipe,
    *,
    device: str = "cpu",
    tokens: int | None = None,
    seed: int = 0,
    out_dir: str | Path,
    max_steps: int | None = None,
    progress: bool = True,
    evaluate: bool = True,
    init_from: str | Path | None = None,
    stage: str = "all",
    precision: str = "fp32",
) -> Path:
    """Run ``recipe`` into ``out_dir``; returns it. ``init_from``: start from the weights of an
    earlier checkpoint of the same recipe (a continuation stage; ``out_dir`` itself is fine:
    it is read before being replaced) instead of a fresh seeded initialisation.

    ``stage``: "all" runs every stage of the recipe (the main one, then its context stage if it
    has one), "main" the main stage only, "context" the context stage only (from ``init_from``, a
    main-stage checkpoint). ``tokens`` and ``max_steps`` apply to each stage run. ``precision``:
    "fp32" or "bf16" (autocast while training; see the module doc)."""
    from decodelab.zoo.tokenizer import load_tokenizer

    if precision not in PRECISIONS:
        raise DecodeLabError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    stages = {"all": recipe.stages(), "main": recipe.stages()[:1], "context": recipe.stages()[1:]}[stage]
    args = RunArgs(device, tokens, seed, Path(out_dir), max_steps, init_from, _set_threads(), stage, precision)
    with staged_dir(args.out) as ckpt:
        gen = _seed_all(seed)
        tok = load_tokenizer()
        model = _initial_model(recipe, tok, init_from, seed).to(device)
        model.train()
        n_params = count_params(model)
        done: list[dict] = []
        before = _stage_one_card(init_from) if stage == "context" else {}
        with TrainLog(ckpt / "training_log.jsonl") as log:
            for r in stages:  # tokens counted from the main stage's, when it ran before
                done.append(_run_stage(model, r, tok, gen, args, log, evaluate, progress, n_params,
                                       done[-1]["tokens_seen"] if done else
                                       before.get("main_stage", {}).get("tokens_seen", 0)))
        plot_log(log.path, ckpt / "loss.png", f"{recipe.name}: {n_params/1e6:.2f}M params")
        last = done[-1]
        facts = {"parameters": n_params, "tokens_seen": last["tokens_seen"],
                 "tokens_seen_at_best": last["tokens_seen_at_best"], "steps": sum(d["steps"] for d in done),
                 "best_step": last["best_step"], "train_time_s": last["train_time_s"]}
        if recipe.context is not None:
            facts["stages"] = done
            facts.update(before)
        if recipe.grow_from is not None:
            facts["grown_from"] = _grown_from(recipe, init_from)
        save_checkpoint(model, tok, recipe, stages[-1], ckpt, args, facts, log.train_losses(), evaluate)
    return args.out


def _initial_model(recipe: Recipe, tok, init_from, seed: int):
    """The weights training starts from: ``init_from``'s, else the recipe's ``grow_from`` zoo model
    grown to its shape (zoo.growth), else a fresh seeded initialisation."""
    if init_from is not None:
        return load_checkpoint(recipe, init_from)
    model = build_model(recipe, tok)
    if recipe.grow_from is not None:
        from decodelab import zoo
        from decodelab.zoo.growth import grow

        src = load_checkpoint(recipe, zoo.resolve(recipe.grow_from))  # a causal Llama, as the recipe's
        grow(src, model, seed=seed)
    return model


def _run_stage(model, r: Recipe, tok, gen, args: RunArgs, log: TrainLog, evaluate: bool, progress: bool,
               n_params: int, offset: int) -> dict:
    """One stage of training (the model's context set to the stage's windows); its figures."""
    model.config.max_position_embeddings = max(r.seq_len, model.config.max_position_embeddings)
    plan = plan_steps(r, args.tokens, args.max_steps)
    batches = CodeBatches(r, tok, gen) if r.data == "code" else TaskBatches(r, tok, random.Random(f"task-batches:{args.seed}"))
    log.emit({"kind": "start", "recipe": r.name, "seq_len": r.seq_len, "seed": args.seed, "device": args.device,
              "params": n_params, "init_from": str(args.init_from) if args.init_from is not None else None,
              "planned_steps": plan.total_steps, "threads": torch.get_num_threads(), "precision": args.precision})
    keeper = BestKeeper(model, r, tok, args.device, log, evaluate)
    if r.grow_from is not None and args.init_from is None:
        keeper(0, offset)  # the grown model's loss before training; kept if training never beats it
    with _fast_matmuls(args.device):
        steps, seen = train_loop(model, r, tok, batches, plan, gen, keeper, args.device, args.out / STOP_FILE,
                                 progress, offset, args.precision)
    keeper.restore()
    train_time = log.elapsed()
    log.emit({"kind": "end", "best_step": keeper.step, "best_tokens": keeper.tokens, "tokens_seen": seen,
              "best_heldout_loss": keeper.loss, "train_time_s": train_time})
    return {"seq_len": r.seq_len, "tokens_seen": seen, "tokens_seen_at_best": keeper.tokens, "steps": steps,
            "best_step": keeper.step, "best_heldout_loss": round(keeper.loss, 4), "train_time_s": train_time}


@contextlib.contextmanager
def _fast_matmuls(device: str):
    """On CUDA, TensorFloat-32 matrix products while training (float32 weights and optimiser, the
    products on tensor cores); the card's figures after it are measured in full float32."""
    if not str(device).startswith("cuda"):
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _grown_from(recipe: Recipe, init_from) -> dict:
    """A grown model's card record of its source: the source's name and figures (from the card
    of ``init_from`` when this run continues a grown checkpoint)."""
    from decodelab import zoo
    from decodelab.zoo.card import read_card

    if init_from is not None:
        return read_card(Path(init_from)).get("grown_from", {"name": recipe.grow_from})
    c = read_card(zoo.resolve(recipe.grow_from))
    return {"name": recipe.grow_from, **{k: c[k] for k in ("parameters", "tokens_seen", "heldout_loss") if k in c}}


def _stage_one_card(init_from) -> dict:
    """A context-stage-only run: the main stage's figures from its checkpoint's card."""
    from decodelab.zoo.card import read_card

    c = read_card(Path(init_from)) if (Path(init_from) / "card.json").is_file() else {}
    keys = ("command", "tokens_seen", "train_time_s", "heldout_loss", "best_step")
    return {"main_stage": {k: c[k] for k in keys if k in c}} if c else {}
