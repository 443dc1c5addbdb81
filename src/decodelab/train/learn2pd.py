"""Learn2PD's filter: the model, the training data (one-token-per-step runs), training, held-out
figures, and the recipe that writes a filter with its card (`decodelab train learn2pd`).

Bao et al. 2025, "Learning to Parallel: Accelerating Diffusion Large Language Models via
Learnable Parallel Decoding", arXiv 2509.25188. The filter is a two-layer MLP over the block's
confidence vector: Linear(b, hidden) -> ReLU -> Linear(hidden, b), one logit per position for
"the current prediction x0 already equals the final output" (b = 32, hidden 32: 2,112 parameters,
the paper's ~2K). Its input (`features`): conf = p(x0) at the block's masked positions, 1.0 at the
positions already unmasked (a fixed value, so the policy needs no memory; what a committed
position held is final anyway).

Labels (the paper's recipe): llada one position per step, greedy, on TRAINING-split prompts; at
every step the block's features, and for each masked position the label [x0 == the token the run
ends with there]. Loss: binary cross-entropy over the masked positions (the others' outputs are
never used), Adam. Prompts come from the zoo task suites the model's card names (the zoo's task
diffusion LMs; other models are refused). Held-out figures come from the same runs on the test
split: precision, recall, accuracy and positive rate of [sigmoid > threshold] over masked
positions (on the one-position-per-step trajectory, not the filter's own), next to those of a
plain confidence threshold (0.9, Fast-dLLM's) on the same positions; and decoding figures:
accuracy and NFE of learn2pd with the new filter against llada one position per step and
fast_dllm, at the filter's block length.

A filter directory (written whole or not at all, zoo.staging): model.safetensors, config.json
(block_length, hidden, the model it was trained for), card.json (figures, recipe, command),
training_log.jsonl and loss.png.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import DecodeLabError
from .acceptance_head import HEADS_DIR, head_dir
from .curves import epoch_loss_plot

UNMASKED = 1.0  # the feature of a position already unmasked


class Filter(nn.Module):
    def __init__(self, block_length: int, hidden: int = 32):
        super().__init__()
        self.block_length, self.hidden = block_length, hidden
        self.net = nn.Sequential(nn.Linear(block_length, hidden), nn.ReLU(), nn.Linear(hidden, block_length))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # [..., b] -> logits [..., b]
        return self.net(feats)

    @torch.no_grad()
    def p_final(self, feats: torch.Tensor) -> torch.Tensor:  # [..., b] -> [...,b] P(x0 is final)
        return torch.sigmoid(self.forward(feats.float()))

    def save(self, out: Path, meta: dict) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, out / "model.safetensors")
        cfg = {"kind": "learn2pd-filter", "block_length": self.block_length, "hidden": self.hidden, **meta}
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def features(conf: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The filter's input [..., b] float32: conf at masked positions, UNMASKED elsewhere.
    conf: [..., b] (any value where not masked, -inf in the diffusion loop's View)."""
    return torch.where(masked, conf.double(), UNMASKED).float()


def load_filter(path: str | Path) -> tuple[Filter, dict]:
    """A saved filter and its config. `path`: a filter directory or the name of one under zoo/heads."""
    from safetensors.torch import load_file

    p = head_dir(path, "learn2pd filter", "decodelab train learn2pd --model MODEL")
    try:
        cfg = json.loads((p / "config.json").read_text())
        if cfg.get("kind") != "learn2pd-filter":
            raise ValueError(f"config.json is not a learn2pd filter's (kind {cfg.get('kind')!r})")
        f = Filter(int(cfg["block_length"]), int(cfg["hidden"]))
        f.load_state_dict(load_file(p / "model.safetensors"))
    except Exception as e:  # noqa: BLE001  (corrupt file, wrong shapes, another head)
        raise DecodeLabError(f"the learn2pd filter at '{p}' is unusable: {e}") from None
    return f.eval(), cfg


def bundled_head(lm, suffix: str, method: str, option: str) -> str:
    """The name of the head trained for this model by convention (`<zoo name>-<suffix>`), for a
    method's option left at "auto"; a clear error for a model without a name."""
    model = model_name(lm)
    if model is None:
        raise DecodeLabError(f"{method} finds its trained {option} by the target's zoo name, and this model has "
                             f"none; pass {option}=DIR, or {option}='init' for untrained ones")
    return f"{model}-{suffix}"


def model_name(lm) -> str | None:
    """The zoo name of a loaded model (its card's name), or its directory's name; None for a model
    built in memory."""
    src = getattr(getattr(getattr(lm, "model", None), "config", None), "_name_or_path", "") or ""
    if not src or not Path(src).is_dir():
        return None
    card = Path(src) / "card.json"
    if card.is_file():
        try:
            return str(json.loads(card.read_text())["name"])
        except (ValueError, KeyError, TypeError):
            pass
    return Path(src).resolve().name


def default_filter_name(model: str, block_length: int | None) -> str:
    """zoo/heads/<model>-learn2pd (the recipe's default block length), or <model>-learn2pd-b<B>."""
    return f"{model}-learn2pd" if block_length is None else f"{model}-learn2pd-b{block_length}"


# -- training data -----------------------------------------------------------------------------

class _Recorder:
    """llada's one-position-per-step policy that records what each step saw: (block, features [b],
    x0 [b], masked [b])."""

    def __init__(self):
        from ..loops import diffusion

        self.rows, self.ranked = [], diffusion.Ranked()

    def select(self, view):
        self.rows.append((view.block, features(view.conf, view.masked), view.x0.clone(), view.masked.clone()))
        return self.ranked.select(view)


@torch.no_grad()
def trajectories(lm, prompts: list[list[int]], gen_length: int, block_length: int,
                 progress: bool = True, desc: str = "runs") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features [N, b], labels [N, b] bool, masked [N, b] bool): one row per step of greedy llada
    one position per step (the diffusion loop itself) on each prompt; label = [x0 == final token]."""
    from tqdm import tqdm

    from ..core.sampling import SamplingConfig
    from ..loops import diffusion
    from ..request import Request
    from ..types import DecodeStats

    feats, labels, masks = [], [], []
    b = block_length
    for ids in tqdm(prompts, desc=desc, unit="prompt", disable=not progress):
        req = Request(target=lm.fresh(), prompt=torch.tensor(ids), max_new_tokens=gen_length,
                      sampling=SamplingConfig(), stats=DecodeStats())
        rec, region = _Recorder(), [lm.mask_id] * gen_length
        for chunk in diffusion.decode(req, rec, block_length=b,
                                      schedule=diffusion.even_schedule(gen_length, b, None)):
            for p, t in zip(chunk.positions, chunk.tokens):
                region[p] = t
        final = torch.tensor(region)  # [G]
        for block, f, x0, m in rec.rows:
            feats.append(f)
            labels.append(x0 == final[block * b:(block + 1) * b])
            masks.append(m)
    return torch.stack(feats), torch.stack(labels), torch.stack(masks)


# -- the recipe --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Learn2PDRecipe:
    prompts: int = 300  # training prompts (the task suite's train split, spread over the model's tasks)
    heldout_prompts: int = 100  # held-out prompts (the test split) for the figures
    gen_length: int = 24  # canvas (the zoo task models' trained answer canvas)
    block_length: int = 0  # the filter's block length (0: the whole canvas)
    hidden: int = 32
    epochs: int = 100
    lr: float = 3e-3
    batch_size: int = 256
    threshold: float = 0.96  # the paper's; held-out figures at it
    decode_prompts: int = 100  # held-out prompts decoded by learn2pd, llada and fast_dllm (0: none)
    seed: int = 0

    def __post_init__(self):
        counts = (self.prompts, self.heldout_prompts, self.gen_length, self.hidden, self.epochs, self.batch_size)
        if min(counts) < 1 or min(self.block_length, self.decode_prompts) < 0:
            raise DecodeLabError("learn2pd recipe: counts must be positive (block_length and decode_prompts >= 0)")
        if not 0.0 < self.threshold < 1.0:
            raise DecodeLabError(f"learn2pd recipe: threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.lr < 1.0:
            raise DecodeLabError(f"learn2pd recipe: lr must be in (0, 1), got {self.lr}")
        if self.block > self.gen_length or self.gen_length % self.block:
            raise DecodeLabError(f"learn2pd recipe: block_length ({self.block_length}) must divide gen_length "
                                 f"({self.gen_length})")

    @property
    def block(self) -> int:
        return self.block_length or self.gen_length


def fit(feats, labels, masked, recipe: Learn2PDRecipe, heldout=None, log=None, progress: bool = True) -> Filter:
    """Train a filter with BCE over the masked positions (Adam, shuffled minibatches of steps).
    feats, labels, masked: [N, b]; heldout: the same triple, scored after every epoch; log(row)."""
    from tqdm import tqdm

    torch.manual_seed(recipe.seed)
    f = Filter(feats.shape[1], recipe.hidden)
    opt = torch.optim.Adam(f.parameters(), lr=recipe.lr)
    gen = torch.Generator().manual_seed(recipe.seed)
    y = labels.float()
    bar = tqdm(range(recipe.epochs), desc="fit filter", unit="epoch", disable=not progress)
    for epoch in bar:
        order, total = torch.randperm(len(feats), generator=gen), 0.0
        for j in range(0, len(feats), recipe.batch_size):
            i = order[j:j + recipe.batch_size]
            loss = bce(f(feats[i]), y[i], masked[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * int(masked[i].sum())
        row = {"epoch": epoch + 1, "train_loss": round(total / int(masked.sum()), 5)}
        if heldout is not None:
            with torch.no_grad():
                row["heldout_loss"] = round(float(bce(f(heldout[0]), heldout[1].float(), heldout[2])), 5)
        bar.set_postfix(row)
        if log is not None:
            log(row)
    return f.eval()


def bce(logits: torch.Tensor, y: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the masked positions. logits, y: [N, b] float; masked: [N, b]."""
    return nn.functional.binary_cross_entropy_with_logits(logits[masked], y[masked])


def scores(pred: torch.Tensor, labels: torch.Tensor) -> dict:
    """Precision, recall, accuracy and positive rate of boolean predictions [M] against labels [M]
    (precision None when nothing is predicted positive, recall None when no label is)."""
    tp, pos, true = int((pred & labels).sum()), int(pred.sum()), int(labels.sum())
    return {"precision": round(tp / pos, 4) if pos else None, "recall": round(tp / true, 4) if true else None,
            "accuracy": round(float((pred == labels).float().mean()), 4),
            "positive_rate": round(float(pred.float().mean()), 4)}


@torch.no_grad()
def evaluate(f: Filter, feats, labels, masked, threshold: float) -> dict:
    """The filter's figures at `threshold` over the masked positions, and a plain confidence
    threshold of 0.9 (Fast-dLLM's rule without its top-1) on the same positions for comparison."""
    p = f.p_final(feats)[masked]
    y = labels[masked]
    return {"positions": int(masked.sum()), "label_rate": round(float(y.float().mean()), 4),
            "bce": round(float(bce(f(feats), labels.float(), masked)), 5), "threshold": threshold,
            **scores(p > threshold, y), "confidence_0.9": scores(feats[masked] >= 0.9, y)}


def task_prompts(lm, task_names, split: str, n: int, seed: int) -> tuple[list, list[list[int]]]:
    """(examples, their prompt ids): n examples of the task suite's `split`, spread evenly over the
    tasks (the first n % len(tasks) tasks get one more)."""
    from ..zoo import tasks

    per = [n // len(task_names) + (i < n % len(task_names)) for i in range(len(task_names))]
    exs = [e for t, k in zip(task_names, per) for e in tasks.examples(t, split, k, seed=seed)]
    return exs, [lm.tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in exs]


def decode_figures(lm, filter_dir: Path, exs, recipe: Learn2PDRecipe, progress: bool = True) -> dict:
    """Accuracy and mean NFE of learn2pd (the new filter), llada one position per step and
    fast_dllm (threshold 0.9) on held-out task examples, end-of-text as the stop."""
    from tqdm import tqdm

    from .. import api
    from ..zoo import tasks

    rows = {"learn2pd": ("learn2pd", {"filter": str(filter_dir), "threshold": recipe.threshold}),
            "llada": ("llada", {}), "fast_dllm": ("fast_dllm", {})}
    out = {}
    for name, (method, kw) in tqdm(rows.items(), desc="decode figures", disable=not progress):
        block = {"block_length": recipe.block} if recipe.block != recipe.gen_length else {}
        outs = [api.generate(lm, e.prompt, method, max_new_tokens=recipe.gen_length, **block, **kw) for e in exs]
        out[name] = {"accuracy": round(sum(tasks.score(e, o.text) for e, o in zip(exs, outs)) / len(exs), 4),
                     "nfe": round(sum(o.stats.nfe for o in outs) / len(outs), 2)}
    out["prompts"] = len(exs)
    return out


def check_model(lm, model: str) -> list[str]:
    """The task names a model's card says it was trained on; refuses a causal LM and a model
    without a task card (the recipe draws its prompts from the zoo task suites)."""
    from ..models.hf_diffusion import HFDiffusionLM
    from ..zoo import tasks
    from ..zoo.card import read_card

    if not isinstance(lm, HFDiffusionLM):
        raise DecodeLabError(f"learn2pd filters are for masked diffusion LMs; {model} is a causal LM")
    src = Path(getattr(lm.model.config, "_name_or_path", "") or ".")
    recipe = read_card(src).get("recipe", {})
    if recipe.get("data") != "tasks":
        raise DecodeLabError(f"the learn2pd recipe draws its prompts from the zoo task suites; {model} has no card "
                             "saying it was trained on them (zoo:tasks-mdlm and zoo:tasks-mdlm-llama have)")
    names = [t for t in recipe.get("tasks") or tasks.LIST_TASKS if t in tasks.TASKS]
    return names or list(tasks.LIST_TASKS)


def run(model: str, out: str | Path, recipe: Learn2PDRecipe, progress: bool = True, command: str = "") -> Path:
    """Train a filter for `model` (zoo:NAME or a directory) and write it to `out`, whole or not at all."""
    from .. import api
    from ..zoo.staging import check_replaceable, staged_dir
    from ..zoo.trainlog import TrainLog

    out = Path(out)
    check_replaceable(out)
    lm = api.load(model)
    task_names = check_model(lm, model)
    t0 = time.time()
    _, train_ids = task_prompts(lm, task_names, "train", recipe.prompts, recipe.seed)
    _, held_ids = task_prompts(lm, task_names, "test", recipe.heldout_prompts, recipe.seed)
    train = trajectories(lm, train_ids, recipe.gen_length, recipe.block, progress, "label runs (train split)")
    held = trajectories(lm, held_ids, recipe.gen_length, recipe.block, progress, "label runs (held-out)")
    collect_s = round(time.time() - t0, 1)
    with staged_dir(out) as tmp, TrainLog(tmp / "training_log.jsonl") as log:
        f = fit(*train, recipe, heldout=held, log=log.emit, progress=progress)
        f.save(tmp, {"model": model})
        epoch_loss_plot(log.rows, tmp / "loss.png", f"learn2pd filter for {model}, blocks of {recipe.block}",
                        "BCE over masked positions (nats)")
        card = {"name": out.name, "model": model, "block_length": recipe.block, "hidden": recipe.hidden,
                "parameters": sum(p.numel() for p in f.parameters()), "command": command,
                "tasks": task_names, "train_steps": len(train[0]), "train_positions": int(train[2].sum()),
                "train_label_rate": round(float(train[1][train[2]].float().mean()), 4),
                "heldout": evaluate(f, *held, recipe.threshold), "collect_time_s": collect_s,
                "fit_time_s": log.elapsed(), "recipe": dataclasses.asdict(recipe), "torch": torch.__version__,
                "description": "Learn2PD filter (arXiv 2509.25188): P(x0 is already final) per block position "
                               "from the block's confidences; labels from llada one-position-per-step runs "
                               "on train-split prompts, figures on test-split prompts."}
        if recipe.decode_prompts:
            exs = task_prompts(lm, task_names, "test", recipe.decode_prompts, recipe.seed)[0]
            card["decode_figures"] = decode_figures(lm, tmp, exs, recipe, progress)
        (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return out

