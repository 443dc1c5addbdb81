"""Training loop shared by every zoo recipe (causal LM and masked diffusion LM).

Reproducible: every random draw comes from generators seeded with ``seed``; on CPU with a
fixed thread count the same command gives the same checkpoint. Writes into ``out_dir``:
the model (``save_pretrained``, safetensors, fp16), the tokenizer, ``training_log.jsonl``
(one JSON object per logged step or evaluation), ``loss.png``, ``card.json`` and a model
card ``README.md``.

Threads: ``torch.set_num_threads`` is set from the environment variable
``DECODELAB_NUM_THREADS`` when present (the bundled checkpoints were trained with 1).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from decodelab.errors import DecodeLabError
from decodelab.zoo.recipes import Recipe

MIN_T = 1e-3  # masking rate floor for the MDLM objective (avoids 1/t blow-up)


# --------------------------------------------------------------------------- models


def build_model(recipe: Recipe, tokenizer):
    a = recipe.arch
    dims = dict(  # the same in every architecture's config
        vocab_size=len(tokenizer),
        hidden_size=a["hidden"],
        intermediate_size=a["ffn"],
        num_hidden_layers=a["layers"],
        num_attention_heads=a["heads"],
        max_position_embeddings=recipe.seq_len,
        attention_dropout=a.get("attn_dropout", 0.0),
        tie_word_embeddings=True,
    )
    eos = tokenizer.eos_token_id
    if recipe.kind == "causal":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(**dims, num_key_value_heads=a["heads"], pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=eos, bos_token_id=eos)
        return LlamaForCausalLM(cfg)
    if recipe.kind == "mdlm" and a.get("type") == "modernbert":
        from transformers import ModernBertConfig, ModernBertForMaskedLM

        cfg = ModernBertConfig(
            **dims,
            global_attn_every_n_layers=1,  # every layer attends to the whole canvas (RoPE positions)
            local_attention=recipe.seq_len,
            embedding_dropout=a.get("dropout", 0.0),
            mlp_dropout=a.get("dropout", 0.0),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos,
            bos_token_id=eos,
            cls_token_id=eos,
            sep_token_id=eos,
        )
        cfg.mask_token_id = tokenizer.mask_token_id
        return ModernBertForMaskedLM(cfg)
    raise DecodeLabError(f"unknown recipe kind {recipe.kind!r}")


def count_params(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


# --------------------------------------------------------------------------- data


_CODE_CACHE: dict[str, torch.Tensor] = {}


def code_stream(split: str, tokenizer) -> torch.Tensor:
    """The token ids of a corpus split as one 1-D tensor (files joined by end-of-text)."""
    if split not in _CODE_CACHE:
        from decodelab.zoo.corpus import code_files, read_code

        eos = tokenizer.eos_token_id
        ids: list[int] = []
        for path in code_files(split):
            ids.extend(tokenizer(read_code(path), add_special_tokens=False)["input_ids"])
            ids.append(eos)
        _CODE_CACHE[split] = torch.tensor(ids, dtype=torch.long)
    return _CODE_CACHE[split]


class CodeBatches:
    """Random windows of ``seq_len`` tokens from the train stream."""

    def __init__(self, recipe: Recipe, tokenizer, gen: torch.Generator):
        self.stream = code_stream("train", tokenizer)
        self.recipe, self.gen = recipe, gen

    def __next__(self):
        L, B = self.recipe.seq_len, self.recipe.batch_size
        starts = torch.randint(0, len(self.stream) - L, (B,), generator=self.gen)
        x = torch.stack([self.stream[s : s + L] for s in starts.tolist()])
        return {"input_ids": x, "loss_mask": torch.ones_like(x, dtype=torch.bool)}


def encode_example(ex, tokenizer) -> tuple[list[int], list[int]]:
    """Prompt ids and target ids (the target ends with end-of-text)."""
    p = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p, t


class TaskBatches:
    """Fresh task examples from the train split, tasks mixed uniformly.

    Causal: prompt + target, right-padded with pad, loss on target tokens only.
    MDLM: prompt + target + end-of-text filler up to ``gen_len`` answer tokens (the canvas
    the diffusion decoder fills: prompt + gen_len masks), loss on the answer region only.
    """

    def __init__(self, recipe: Recipe, tokenizer, gen: torch.Generator, seed: int, split: str = "train"):
        from decodelab.zoo import tasks

        self.recipe, self.tok, self.gen, self.split = recipe, tokenizer, gen, split
        self.rng = random.Random(f"task-batches:{seed}")
        self.tasks = tasks
        self.names = list(recipe.tasks or tasks.TASKS)
        self.weights = list(recipe.task_weights) if recipe.task_weights else None

    def __next__(self):
        B, L = self.recipe.batch_size, self.recipe.seq_len
        pad = self.tok.pad_token_id if self.recipe.kind == "causal" else self.tok.eos_token_id
        rows, masks = [], []
        for _ in range(B):
            task = self.rng.choices(self.names, weights=self.weights)[0] if self.weights else self.rng.choice(self.names)
            ex = self.tasks.sample(task, self.split, self.rng)
            p, t = encode_example(ex, self.tok)
            if self.recipe.kind == "mdlm":
                g = self.recipe.gen_len
                t = (t + [pad] * g)[:g]
            ids = (p + t)[:L]
            m = ([False] * len(p) + [True] * len(t))[:L]
            rows.append(ids)
            masks.append(m)
        width = max(len(r) for r in rows)
        x = torch.full((B, width), pad, dtype=torch.long)
        lm = torch.zeros((B, width), dtype=torch.bool)
        att = torch.zeros((B, width), dtype=torch.long)
        for i, (r, m) in enumerate(zip(rows, masks)):
            x[i, : len(r)] = torch.tensor(r)
            lm[i, : len(m)] = torch.tensor(m)
            att[i, : len(r)] = 1
        return {"input_ids": x, "loss_mask": lm, "attention_mask": att}


# --------------------------------------------------------------------------- losses


def _lm_head(model):
    from decodelab.models.hf_diffusion import split_head

    return split_head(model)[1]


def _body(model, ids, att):
    from decodelab.models.hf_diffusion import split_head

    return split_head(model)[0](ids, att)


def causal_loss(model, batch, device):
    """Mean next-token cross-entropy over the positions ``loss_mask`` marks (logits are
    computed only there: the 4k-vocabulary head dominates a tiny model's cost)."""
    x = batch["input_ids"].to(device)
    att = batch.get("attention_mask")
    att = att.to(device) if att is not None else None
    h = _body(model, x, att)[:, :-1]
    m = batch["loss_mask"][:, 1:].to(device)
    logits = _lm_head(model)(h[m]).float()
    loss = F.cross_entropy(logits, x[:, 1:][m])
    return loss, int(m.sum())


def sample_t(n: int, gen: torch.Generator, sampler: str = "uniform") -> torch.Tensor:
    """n masking rates, each U(0,1): i.i.d. ("uniform") or stratified, one per interval
    [i/n, (i+1)/n) in a random rotation ("stratified", MDLM's low-discrepancy sampler)."""
    if sampler == "uniform":
        return torch.rand(n, generator=gen)
    if sampler == "stratified":
        return (torch.rand(1, generator=gen) + torch.arange(n) / n) % 1.0
    raise DecodeLabError(f"t_sampler must be 'uniform' or 'stratified', got {sampler!r}")


def mdlm_loss(model, batch, device, mask_id: int, gen: torch.Generator, t: torch.Tensor | None = None,
              t_sampler: str = "uniform"):
    """MDLM / LLaDA objective. t ~ U(0,1) per sequence, each eligible token masked with
    probability t, cross-entropy on masked tokens weighted 1/t, averaged over eligible
    tokens (an upper bound on the per-token NLL). Also returns the plain mean CE on
    masked tokens.

    ``t_sampler="stratified"`` is MDLM's low-discrepancy sampler (Sahoo et al. 2024): one
    uniform offset u and t_i = (u + i/B) mod 1, so every batch covers (0, 1) evenly; each
    t_i is still U(0,1), the objective is unchanged and its variance lower."""
    x = batch["input_ids"]
    elig = batch["loss_mask"]
    B, L = x.shape
    if t is None:
        t = sample_t(B, gen, t_sampler)
    t = t.clamp(min=MIN_T)
    masked = (torch.rand(B, L, generator=gen) < t[:, None]) & elig
    xin = torch.where(masked, torch.full_like(x, mask_id), x).to(device)
    att = batch.get("attention_mask")
    h = _body(model, xin, att.to(device) if att is not None else None)
    masked = masked.to(device)
    n_masked = masked.sum()
    if int(n_masked) == 0:
        zero = h.sum() * 0.0
        return zero, zero.detach(), 0
    logits = _lm_head(model)(h[masked]).float()
    ce = F.cross_entropy(logits, x.to(device)[masked], reduction="none")
    w = (1.0 / t.to(device))[:, None].expand(B, L)[masked]
    weighted = (ce * w).sum() / elig.sum().clamp(min=1).to(device)
    plain = ce.mean()
    return weighted, plain, int(n_masked)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def heldout_code_loss(model, recipe: Recipe, tokenizer, device, max_windows: int | None = None, seed: int = 1234):
    """Held-out loss on non-overlapping ``seq_len`` windows of the held-out split.

    causal: mean next-token cross-entropy (nats/token).
    mdlm: dict with the MDLM bound (weighted, nats/token) and the plain masked-token CE,
    with t and masks from a fixed generator.
    """
    model.eval()
    stream = code_stream("heldout", tokenizer)
    L = recipe.seq_len
    n = len(stream) // L
    windows = stream[: n * L].view(n, L)
    if max_windows is not None and n > max_windows:
        idx = torch.linspace(0, n - 1, max_windows).long()
        windows = windows[idx]
    gen = torch.Generator().manual_seed(seed)
    tot, tot_plain, count, count_plain = 0.0, 0.0, 0, 0
    for i in range(0, len(windows), recipe.batch_size):
        x = windows[i : i + recipe.batch_size]
        batch = {"input_ids": x, "loss_mask": torch.ones_like(x, dtype=torch.bool)}
        if recipe.kind == "causal":
            loss, k = causal_loss(model, batch, device)
            tot += float(loss) * k
            count += k
        else:
            w, plain, k = mdlm_loss(model, batch, device, tokenizer.mask_token_id, gen)
            tot += float(w) * x.numel()
            count += x.numel()
            tot_plain += float(plain) * k
            count_plain += k
    model.train()
    if recipe.kind == "causal":
        return tot / count
    return {"bound": tot / count, "masked_ce": tot_plain / max(count_plain, 1)}


# --------------------------------------------------------------------------- plot / card


def plot_log(log_path: Path, png_path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    tr = [(r["tokens"], r["loss"]) for r in rows if r.get("kind") == "train"]
    ev = [(r["tokens"], r["heldout_loss"]) for r in rows if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(6, 4))
    if tr:
        ax.plot([a for a, _ in tr], [b for _, b in tr], label="train (logged batches)", lw=1)
    if ev:
        ax.plot([a for a, _ in ev], [b for _, b in ev], "o-", label="held-out", lw=1.5)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------- main loop


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
) -> Path:
    """Run ``recipe``. ``init_from``: start from the weights of an earlier checkpoint of the
    same recipe (a continuation stage) instead of a fresh seeded initialisation."""
    from tqdm import tqdm

    from decodelab.zoo import card as card_mod
    from decodelab.zoo.tokenizer import load_tokenizer

    threads = os.environ.get("DECODELAB_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    tok = load_tokenizer()
    if init_from is not None:
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

        cls = AutoModelForCausalLM if recipe.kind == "causal" else AutoModelForMaskedLM
        model = cls.from_pretrained(str(init_from), dtype=torch.float32).to(device)
    else:
        model = build_model(recipe, tok).to(device)
    model.train()
    n_params = count_params(model)

    budget = int(tokens if tokens is not None else recipe.tokens)
    tokens_per_step = recipe.batch_size * recipe.seq_len if recipe.data == "code" else None
    # task batches vary in length: the budget counts the target-side tokens actually seen
    est_per_step = tokens_per_step or recipe.batch_size * recipe.est_tokens_per_example
    total_steps = max(1, math.ceil(budget / est_per_step))
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)

    batches = CodeBatches(recipe, tok, gen) if recipe.data == "code" else TaskBatches(recipe, tok, gen, seed)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name and "norm" not in name.lower() else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )
    warm = min(recipe.warmup, max(1, total_steps // 10))

    def lr_at(step: int) -> float:
        if step < warm:
            return recipe.lr * (step + 1) / warm
        frac = (step - warm) / max(1, total_steps - warm)
        return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    log_path = out / "training_log.jsonl"
    log = log_path.open("w")

    def emit(row):
        log.write(json.dumps(row) + "\n")
        log.flush()

    emit({"kind": "start", "recipe": recipe.name, "seed": seed, "device": device, "params": n_params,
          "init_from": str(init_from) if init_from is not None else None,
          "planned_steps": total_steps, "threads": torch.get_num_threads()})

    best = {"loss": float("inf"), "state": None, "step": 0, "tokens": 0}
    seen = 0
    t0 = time.time()
    ema = None
    bad_evals = 0

    def do_eval(step):
        nonlocal bad_evals
        if recipe.data == "code":
            h = heldout_code_loss(model, recipe, tok, device, max_windows=recipe.eval_windows)
            val = h if recipe.kind == "causal" else h["bound"]
        else:
            val = task_heldout_loss(model, recipe, tok, device)
            h = {"loss": val, "quick_accuracy": quick_task_accuracy(model, recipe, tok)} if evaluate else {"loss": val}
        emit({"kind": "eval", "step": step, "tokens": seen, "heldout_loss": val, "detail": h,
              "elapsed_s": round(time.time() - t0, 1)})
        if val < best["loss"]:
            best.update(loss=val, state=copy.deepcopy(model.state_dict()), step=step, tokens=seen)
            bad_evals = 0
        else:
            bad_evals += 1
        return val

    bar = tqdm(range(total_steps), desc=f"zoo train {recipe.name}", disable=not progress, dynamic_ncols=True)
    last_h = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = next(batches)
        if recipe.kind == "causal":
            loss, k = causal_loss(model, batch, device)
        else:
            loss, _plain, _k = mdlm_loss(model, batch, device, tok.mask_token_id, gen, t_sampler=recipe.t_sampler)
            k = int(batch["loss_mask"].sum())
        seen += tokens_per_step or k
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = float(loss.detach())
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % recipe.log_every == 0 or step == total_steps - 1:
            emit({"kind": "train", "step": step, "tokens": seen, "loss": lv, "loss_ema": ema, "lr": lr_at(step),
                  "elapsed_s": round(time.time() - t0, 1)})
        if (step + 1) % recipe.eval_every == 0 or step == total_steps - 1:
            last_h = do_eval(step + 1)
            if recipe.patience and bad_evals >= recipe.patience:
                emit({"kind": "early_stop", "step": step + 1, "tokens": seen})
                break
        if (out / "STOP").exists():  # graceful stop: keep the best checkpoint so far
            if last_h is None or (step + 1) % recipe.eval_every != 0:
                do_eval(step + 1)
            emit({"kind": "stopped", "step": step + 1, "tokens": seen})
            (out / "STOP").unlink()
            break
        bar.set_postfix(loss=f"{ema:.3f}", heldout=f"{last_h:.3f}" if last_h is not None else "-")
        if tokens_per_step is None and seen >= budget and max_steps is None:
            do_eval(step + 1)
            break
    bar.close()
    train_time = time.time() - t0
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    emit({"kind": "end", "best_step": best["step"], "best_tokens": best["tokens"], "tokens_seen": seen,
          "best_heldout_loss": best["loss"], "train_time_s": round(train_time, 1)})
    log.close()
    plot_log(log_path, out / "loss.png", f"{recipe.name}: {n_params/1e6:.2f}M params")

    model.eval()
    model = model.to("cpu").to(torch.float16)
    model.save_pretrained(out)
    tok.save_pretrained(out)

    card = {
        "name": recipe.name,
        "kind": recipe.kind,
        "architecture": type(model).__name__,
        "auto_class": "AutoModelForCausalLM" if recipe.kind == "causal" else "AutoModelForMaskedLM",
        "parameters": n_params,
        "dtype": "float16",
        "seed": seed,
        "device": device,
        "tokens_seen": seen,
        "tokens_seen_at_best": best["tokens"],
        "steps": step + 1,
        "best_step": best["step"],
        "train_time_s": round(train_time, 1),
        "python": __import__("decodelab.zoo.corpus", fromlist=["x"]).python_version(),
        "torch": torch.__version__,
        "recipe": recipe.describe(),
        "command": (f"DECODELAB_NUM_THREADS={threads} " if threads else "")
        + f"decodelab zoo train {recipe.name} --device {device} --seed {seed} --out {out}"
        + (f" --tokens {tokens}" if tokens is not None else "")
        + (f" --max-steps {max_steps}" if max_steps is not None else "")
        + (f" --init-from {init_from}" if init_from is not None else ""),
    }
    card.update(final_figures(model, recipe, tok, out, evaluate=evaluate))
    card_mod.write_card(out, card)
    return out


@torch.no_grad()
def task_heldout_loss(model, recipe: Recipe, tok, device, n_per_task: int = 32) -> float:
    """The training objective on a fixed set of test-split examples, averaged over tasks."""
    from decodelab.zoo import tasks

    model.eval()
    sub = Recipe(**{**recipe.__dict__, "batch_size": n_per_task})
    gen = torch.Generator().manual_seed(4321)
    names = list(recipe.tasks or tasks.TASKS)
    tot = 0.0
    for name in names:
        tb = TaskBatches(sub, tok, gen, 0, split="test")
        tb.names, tb.weights = [name], None
        tb.rng = random.Random(f"{name}:eval")
        batch = next(tb)
        if recipe.kind == "causal":
            loss, _k = causal_loss(model, batch, device)
        else:
            loss, _p, _k = mdlm_loss(model, batch, device, tok.mask_token_id, gen)
        tot += float(loss)
    model.train()
    return tot / len(names)


def quick_task_accuracy(model, recipe: Recipe, tok, n: int = 30) -> dict:
    """Accuracy on ``n`` test examples of each headline task the recipe trains on (progress
    during training; the card's figures use more examples)."""
    from decodelab.zoo.evaluate import HEADLINE_TASKS, task_accuracy

    names = [t for t in (recipe.tasks or HEADLINE_TASKS) if t in HEADLINE_TASKS]
    acc = task_accuracy(model, tok, recipe.kind, n=n, task_names=names, gen_length=recipe.gen_len or 24)
    model.train()
    return acc


def final_figures(model, recipe: Recipe, tok, out: Path, evaluate: bool = True) -> dict:
    """Figures for the card, measured on the saved (fp16) weights run in float32."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    cls = AutoModelForCausalLM if recipe.kind == "causal" else AutoModelForMaskedLM
    m = cls.from_pretrained(str(out), dtype=torch.float32)
    m.eval()
    figs: dict = {}
    rows = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    tr = [r["loss"] for r in rows if r.get("kind") == "train"]
    if tr:
        figs["train_loss_last"] = round(sum(tr[-10:]) / len(tr[-10:]), 4)
    if recipe.data == "code":
        h = heldout_code_loss(m, recipe, tok, "cpu", max_windows=None if evaluate else 8)
        if recipe.kind == "causal":
            figs["heldout_loss"] = round(h, 4)
            figs["train_loss_eval"] = round(train_sample_loss(m, recipe, tok), 4)
        else:
            figs["heldout_loss"] = round(h["bound"], 4)
            figs["heldout_masked_ce"] = round(h["masked_ce"], 4)
            figs["train_loss_eval"] = round(train_sample_loss(m, recipe, tok), 4)
    else:
        figs["heldout_loss"] = round(task_heldout_loss(m, recipe, tok, "cpu"), 4)
        if evaluate:
            from decodelab.zoo.evaluate import task_accuracy

            figs["task_accuracy"] = task_accuracy(m, tok, recipe.kind, n=recipe.eval_examples)
    return figs


@torch.no_grad()
def train_sample_loss(model, recipe: Recipe, tok, n_windows: int = 64) -> float:
    """The same loss as held-out, on evenly spaced windows of the train split."""
    stream = code_stream("train", tok)
    L = recipe.seq_len
    n = len(stream) // L
    idx = torch.linspace(0, n - 1, n_windows).long()
    windows = stream[: n * L].view(n, L)[idx]
    gen = torch.Generator().manual_seed(1234)
    tot, cnt = 0.0, 0
    for i in range(0, len(windows), recipe.batch_size):
        x = windows[i : i + recipe.batch_size]
        batch = {"input_ids": x, "loss_mask": torch.ones_like(x, dtype=torch.bool)}
        if recipe.kind == "causal":
            loss, k = causal_loss(model, batch, "cpu")
        else:
            loss, _p, _k = mdlm_loss(model, batch, "cpu", tok.mask_token_id, gen)
            k = x.numel()
        tot += float(loss) * k
        cnt += k
    return tot / cnt
