"""PPD's prompt embeddings: distillation from the frozen target, held-out per-depth top-k
accuracy, the sparse trees built from it, and the recipe that writes them with a card
(`decodelab train ppd --target zoo:code-target`).

Chen et al. 2024, "Hardware-Aware Parallel Prompt Decoding for Memory-Efficient Acceleration of
LLM Inference", arXiv 2405.18628. Only the m prompt embeddings [m, H] are trained (the model is
frozen), initialised from the mean input embedding of the text "Next {i+2} word". One training
forward scores every position of a window at once: the window's L tokens, then m prompt tokens
after EVERY token t, prompt i at position t + i + 1, seeing x_<=t and prompts < i of t (a 4D mask;
the layout the decoder uses at a tree node). Prompt i at t is distilled towards the frozen
target's distribution of the token i + 2 positions after t (its logits at t + i + 1, teacher
forced on the window): loss = sum_i 0.8^i KL(teacher || student) / m, AdamW lr 1e-2 (no weight
decay), one epoch over `sequences` train-split windows (zoo.batches.code_windows).

Held-out figures (held-out split windows, teacher forced): acc[i][r] = P(the student's rank-r
guess of prompt i is the target's argmax token i + 2 ahead), the per-depth top-k accuracy (its
cumulative sum over r), and the KL. The sparse tree for each budget in `budgets` is built from acc
(methods.ppd.build_tree) and stored in config.json with the embeddings.

A prompts directory (written whole or not at all, zoo.staging): model.safetensors (the embeddings),
config.json (m, hidden, accuracy table, trees), card.json (figures, memory overhead, recipe,
command), training_log.jsonl and loss.png.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DecodeLabError
from .acceptance_head import HEADS_DIR

DECAY = 0.8  # the paper's per-prompt loss weight base
BUDGETS = "4,6,8,10,12,16,20,24,32"


@dataclass(frozen=True, kw_only=True)
class PPDRecipe:
    m: int = 3  # prompt tokens
    sequences: int = 1536  # train-split windows (one epoch; ~12 min on one busy CPU thread)
    seq_len: int = 128
    batch_size: int = 8
    lr: float = 1e-2
    epochs: int = 1
    heldout_windows: int = 64
    eval_every: int = 32  # optimiser steps between held-out losses (and at the end)
    topk: int = 8  # ranks in the accuracy table
    budgets: str = BUDGETS  # the trees stored with the embeddings
    seed: int = 0

    def __post_init__(self):
        counts = (self.m, self.sequences, self.seq_len, self.batch_size, self.epochs, self.heldout_windows,
                  self.eval_every, self.topk)
        if min(counts) < 1:
            raise DecodeLabError("ppd recipe: counts must be positive")
        if self.seq_len < self.m + 2:
            raise DecodeLabError(f"ppd recipe: seq_len must be at least m + 2 = {self.m + 2}, got {self.seq_len}")
        if not 0.0 < self.lr < 1.0:
            raise DecodeLabError(f"ppd recipe: lr must be in (0, 1), got {self.lr}")
        try:
            bad = [b for b in self.budget_list if b < 2]
        except ValueError:
            bad = [self.budgets]
        if bad:
            raise DecodeLabError(f"ppd recipe: budgets must be integers >= 2 separated by commas, got '{self.budgets}'")

    @property
    def budget_list(self) -> list[int]:
        return [int(b) for b in self.budgets.split(",") if b.strip()]


def layout(L: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [L(1+m)], visible [L(1+m), L(1+m)] bool) for a window of L tokens followed by m
    prompt tokens after every token t (row L + t*m + i = prompt i of t, at position t + i + 1)."""
    n = L * (1 + m)
    t = torch.arange(L).repeat_interleave(m)  # [L*m] the token each prompt row follows
    i = torch.arange(m).repeat(L)  # [L*m] prompt index
    pos = torch.cat([torch.arange(L), t + i + 1])
    vis = torch.zeros(n, n, dtype=torch.bool)
    vis[:L, :L] = torch.tril(torch.ones(L, L, dtype=torch.bool))
    vis[L:, :L] = torch.arange(L)[None, :] <= t[:, None]  # tokens up to t
    same = (t[:, None] == t[None, :]) & (i[None, :] <= i[:, None])  # prompts of t up to i
    vis[L:, L:] = same
    return pos, vis


def _hidden_logits(model, embeds, pos, mask, rows):
    """Logits [B, R, V] at `rows` of a forward of input embeddings [B, N, H] (the output head only
    where needed)."""
    out = model.base_model(inputs_embeds=embeds, position_ids=pos, attention_mask=mask, use_cache=False)
    return model.get_output_embeddings()(out.last_hidden_state[:, rows]).float()


def student_teacher(model, x: torch.Tensor, prompts: torch.Tensor, m: int):
    """(student log-probs [B, L, m, V] of prompt i after token t, teacher log-probs [B, L, m, V] of
    the token i + 2 after t, valid [L, m] bool: t + i + 1 < L)."""
    B, L = x.shape
    pos, vis = layout(L, m)
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(vis.shape, dtype=dtype).masked_fill_(~vis, torch.finfo(dtype).min)[None, None]
    with torch.no_grad():
        teacher = torch.log_softmax(model(input_ids=x).logits.float(), -1)  # [B, L, V]
        tok = model.get_input_embeddings()(x)  # [B, L, H]
    embeds = torch.cat([tok, prompts.to(dtype).repeat(L, 1)[None].expand(B, -1, -1)], 1)
    student = torch.log_softmax(_hidden_logits(model, embeds, pos[None].expand(B, -1), mask,
                                               torch.arange(L, L * (1 + m))), -1)  # [B, L*m, V]
    student = student.view(B, L, m, -1)
    src = (torch.arange(L)[:, None] + torch.arange(m)[None, :] + 1)  # [L, m] teacher row
    valid = src < L
    teacher = teacher[:, src.clamp(max=L - 1)]  # [B, L, m, V]
    return student, teacher, valid


def kl_per_prompt(student, teacher, valid) -> torch.Tensor:
    """[m] mean KL(teacher || student) over the valid positions of each prompt."""
    kl = (teacher.exp() * (teacher - student)).sum(-1)  # [B, L, m]
    w = valid[None].float()
    return (kl * w).sum((0, 1)) / (w.sum((0, 1)) * kl.shape[0]).clamp_min(1)


def loss_fn(kl: torch.Tensor) -> torch.Tensor:
    m = len(kl)
    return (kl * DECAY ** torch.arange(m, dtype=kl.dtype)).sum() / m


@torch.no_grad()
def heldout(model, windows: torch.Tensor, prompts: torch.Tensor, m: int, topk: int, batch: int = 8) -> dict:
    """Held-out KL per prompt, loss, and acc[i][r] = P(rank-r guess of prompt i is the target's
    argmax token i + 2 ahead), teacher forced on the windows."""
    kls, hits, count = [], torch.zeros(m, topk, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    for j in range(0, len(windows), batch):
        s, t, valid = student_teacher(model, windows[j:j + batch], prompts, m)
        kls.append(kl_per_prompt(s, t, valid) * len(windows[j:j + batch]))
        truth = t.argmax(-1)  # [B, L, m]
        ranks = s.topk(topk, -1).indices  # [B, L, m, k]
        hit = (ranks == truth[..., None]) & valid[None, :, :, None]  # [B, L, m, k]
        hits += hit.sum((0, 1)).double()
        count += valid.sum(0).double() * len(s)
    kl = torch.stack(kls).sum(0) / len(windows)
    acc = (hits / count[:, None]).tolist()
    return {"kl_per_prompt": [round(float(v), 4) for v in kl], "loss": round(float(loss_fn(kl)), 5),
            "accuracy": [[round(a, 5) for a in row] for row in acc],
            "topk_accuracy": [[round(sum(row[:k + 1]), 4) for k in range(topk)] for row in acc]}


def train(model, tokenizer, recipe: PPDRecipe, log=None, progress: bool = True) -> tuple[torch.Tensor, dict]:
    """Fit the prompt embeddings [m, H] on the frozen model; returns them and the held-out figures."""
    from tqdm import tqdm

    from ..methods.ppd import INIT_TEXT
    from ..zoo.batches import code_windows

    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    emb = model.get_input_embeddings()
    with torch.no_grad():
        init = torch.stack([emb(torch.tensor(tokenizer(INIT_TEXT.format(i + 2), add_special_tokens=False)
                                             ["input_ids"])).float().mean(0) for i in range(recipe.m)])
    prompts = torch.nn.Parameter(init.clone())
    gen = torch.Generator().manual_seed(recipe.seed)
    windows = code_windows("train", tokenizer, recipe.seq_len)
    if recipe.sequences > len(windows):
        raise DecodeLabError(f"the train split has {len(windows)} windows of {recipe.seq_len} tokens, fewer than "
                             f"sequences={recipe.sequences}")
    windows = windows[torch.randperm(len(windows), generator=gen)[:recipe.sequences]]
    held = code_windows("heldout", tokenizer, recipe.seq_len, recipe.heldout_windows)
    opt = torch.optim.AdamW([prompts], lr=recipe.lr, weight_decay=0.0)
    steps = math.ceil(len(windows) / recipe.batch_size) * recipe.epochs
    bar = tqdm(total=steps, desc="ppd prompts", unit="step", disable=not progress)
    emit = log or (lambda row: None)
    init_eval = heldout(model, held, prompts.detach(), recipe.m, recipe.topk)
    emit({"kind": "eval", "step": 0, "tokens": 0, "heldout_loss": init_eval["loss"]})
    step, tokens = 0, 0
    for _ in range(recipe.epochs):
        order = torch.randperm(len(windows), generator=gen)
        for j in range(0, len(windows), recipe.batch_size):
            x = windows[order[j:j + recipe.batch_size]]
            kl = kl_per_prompt(*student_teacher(model, x, prompts, recipe.m))
            loss = loss_fn(kl)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step, tokens = step + 1, tokens + x.numel()
            loss = float(loss.detach())
            emit({"kind": "train", "step": step, "tokens": tokens, "loss": round(loss, 5),
                  "kl_per_prompt": [round(float(v), 4) for v in kl.detach()]})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if step % recipe.eval_every == 0 and step < steps:
                ev = heldout(model, held, prompts.detach(), recipe.m, recipe.topk)
                emit({"kind": "eval", "step": step, "tokens": tokens, "heldout_loss": ev["loss"]})
    bar.close()
    final = heldout(model, held, prompts.detach(), recipe.m, recipe.topk)
    emit({"kind": "eval", "step": step, "tokens": tokens, "heldout_loss": final["loss"]})
    return prompts.detach(), {"heldout": final, "heldout_at_init": init_eval, "steps": step,
                              "train_tokens": tokens, "heldout_windows": len(held)}


def default_out(target: str) -> Path:
    from .cli import default_head_name

    return HEADS_DIR / f"{default_head_name(target)}-ppd"


def run(target: str, out: str | Path, recipe: PPDRecipe, progress: bool = True, command: str = "") -> Path:
    """Train prompts for `target` (zoo:NAME or a directory) and write them to `out`, whole or not at all."""
    from .. import api
    from ..methods.ppd import build_tree, memory_overhead, save_prompts
    from ..models.hf import HFCausalLM
    from ..zoo.staging import check_replaceable, staged_dir
    from ..zoo.trainlog import TrainLog, plot_log

    out = Path(out)
    check_replaceable(out)
    lm = api.load(target)
    if not isinstance(lm, HFCausalLM) or lm.tokenizer is None:
        raise DecodeLabError(f"ppd prompts are trained on a transformers causal LM with a tokenizer; {target} is not one")
    if recipe.seq_len > (lm.max_length or recipe.seq_len):
        raise DecodeLabError(f"seq_len {recipe.seq_len} exceeds the model's context of {lm.max_length} tokens")
    torch.manual_seed(recipe.seed)
    with staged_dir(out) as tmp, TrainLog(tmp / "training_log.jsonl") as log:
        prompts, figures = train(lm.model, lm.tokenizer, recipe, log.emit, progress)
        acc = figures["heldout"]["accuracy"]
        trees = {str(b): build_tree(acc, b) for b in recipe.budget_list}
        save_prompts(tmp, prompts, {"model": target, "accuracy": acc, "trees": trees})
        plot_log(tmp / "training_log.jsonl", tmp / "loss.png",
                 f"PPD prompts for {target}: sum_i 0.8^i KL / m")
        params = sum(p.numel() for p in lm.model.parameters())
        card = {"name": out.name, "model": target, "m": recipe.m, "hidden": prompts.shape[1],
                "parameters": prompts.numel(), "model_parameters": params,
                "memory_overhead_percent": round(100 * memory_overhead(prompts, lm.model), 6),
                "command": command, **figures, "trees": trees, "fit_time_s": log.elapsed(),
                "recipe": dataclasses.asdict(recipe), "torch": torch.__version__,
                "description": "PPD prompt embeddings (arXiv 2405.18628): m trained input embeddings whose logits "
                               "guess the tokens 2..m+1 ahead; distilled from the frozen target on train-split "
                               "windows; held-out per-depth top-k accuracy against the target's argmax; the "
                               "sparse trees built from it per budget (tokens per forward)."}
        (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return out


def add_command(sub) -> None:
    from .cli import recipe_arguments

    p = sub.add_parser("ppd", help="train PPD's prompt embeddings (arXiv 2405.18628) for a causal LM")
    p.add_argument("--target", required=True, help="the frozen target (directory or zoo:NAME)")
    p.add_argument("--out", help="output directory (default: the bundled zoo/heads/<target name>-ppd)")
    recipe_arguments(p, PPDRecipe)
    p.set_defaults(func=cmd_ppd)


def cmd_ppd(args) -> int:
    from .cli import command_line, recipe_from

    recipe = recipe_from(args, PPDRecipe)
    out = args.out or str(default_out(args.target))
    t0 = time.time()
    path = run(args.target, out, recipe, command=command_line())
    card = json.loads((Path(path) / "card.json").read_text())
    print(json.dumps({"out": str(path), "seconds": round(time.time() - t0, 1),
                      "topk_accuracy": card["heldout"]["topk_accuracy"],
                      "memory_overhead_percent": card["memory_overhead_percent"],
                      "tree_12": card["trees"].get("12")}, indent=2))
    return 0
