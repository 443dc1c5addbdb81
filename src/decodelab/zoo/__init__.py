"""decodelab's model zoo: small models trained here, offline, and bundled with the package.

Corpora (``corpus``: the Python standard library's source; ``tasks``: synthetic task
suites), the tokenizer (``tokenizer``), one recipe per model (``recipes``), the training
loop (``train``), and the bundled checkpoints under ``zoo/checkpoints/<name>/``, each with
a ``README.md`` model card and ``card.json``.

    >>> from decodelab import zoo
    >>> zoo.MODELS
    ('code-target', 'code-draft', 'code-mdlm', 'tasks-ar', 'tasks-draft', 'tasks-mdlm', 'tasks-mdlm-llama')
    >>> path = zoo.resolve("code-target")   # a directory for from_pretrained
"""

from __future__ import annotations

from pathlib import Path

from decodelab.errors import DecodeLabError
from decodelab.zoo.recipes import MODELS, RECIPES

CHECKPOINTS_DIR = Path(__file__).parent / "checkpoints"
# checkpoints made from another zoo model by a `decodelab train` recipe (not by `zoo train`): the command
DERIVED: dict[str, str] = {"code-target-hyperfit": "decodelab train hyperfit --base zoo:code-target",
                           "code-target-lud": "decodelab train lud --target zoo:code-target --alpha 0.6",
                           "tasks-ar-lud": "decodelab train lud --target zoo:tasks-ar --lookahead 8 --windows 8000 "
                                           "--epochs 2 --heldout-windows 220"}

__all__ = ["MODELS", "DERIVED", "RECIPES", "CHECKPOINTS_DIR", "resolve", "list_models", "info", "train"]


def _check_name(name: str) -> None:
    if name not in RECIPES and name not in DERIVED:
        raise DecodeLabError(f"unknown zoo model {name!r}; known models: {', '.join(MODELS + tuple(DERIVED))}")


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def resolve(name: str) -> Path:
    """The bundled checkpoint directory of zoo model ``name``."""
    _check_name(name)
    path = CHECKPOINTS_DIR / name
    if not _is_checkpoint(path):
        how = DERIVED.get(name, f"decodelab zoo train {name}")
        raise DecodeLabError(f"zoo model {name!r} is known but its checkpoint is not bundled at {path}; "
                             f"train it with `{how} --out {path}`")
    return path


def info(name: str) -> dict:
    """The figures of zoo model ``name`` from its card (parameters, tokens seen, losses, accuracy)."""
    from decodelab.zoo.card import read_card

    _check_name(name)
    path = CHECKPOINTS_DIR / name
    card = read_card(path) if _is_checkpoint(path) else {}
    if name in DERIVED:  # its card holds what a recipe would (data: the recipe's, code before it had one)
        recipe = card.get("recipe", {})
        kind, data, description = card.get("kind", "causal"), recipe.get("data", "code"), recipe.get("description", "")
    else:
        kind, data, description = RECIPES[name].kind, RECIPES[name].data, RECIPES[name].description
    out = {
        "name": name,
        "kind": kind,
        "data": data,
        "description": description,
        "bundled": bool(card),
        "path": str(path) if card else None,
    }
    for key in (
        "architecture",
        "auto_class",
        "parameters",
        "tokens_seen",
        "train_loss_eval",
        "heldout_loss",
        "heldout_masked_ce",
        "task_accuracy",
        "agreement_with_code_target",
        "agreement_of_code_draft",
        "command",
    ):
        if key in card:
            out[key] = card[key]
    return out


def list_models() -> list[dict]:
    """One ``info`` dict per zoo model (the derived ones last)."""
    return [info(n) for n in MODELS + tuple(DERIVED)]


def train(
    name: str,
    *,
    device: str = "cpu",
    tokens: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    evaluate: bool = True,
    init_from: str | Path | None = None,
    stage: str = "all",
    precision: str = "fp32",
) -> Path:
    """Run the recipe of ``name``; returns the checkpoint directory.

    ``out_dir`` defaults to ``./zoo-<name>`` (never over the bundled checkpoint unless asked).
    ``tokens`` overrides the recipe's token budget, ``max_steps`` caps the optimiser steps,
    ``init_from`` continues from an earlier checkpoint of the same model (a second stage).
    ``stage``: "all" (every stage of the recipe), "main" (the main stage only) or "context" (the
    recipe's longer-context stage only, from ``init_from``: a main-stage checkpoint).
    ``precision``: "fp32" (default) or "bf16" (bfloat16 autocast while training: faster on CPUs
    with bfloat16 units and on GPUs; zoo.training's module doc).
    """
    _check_name(name)
    if name in DERIVED:
        raise DecodeLabError(f"zoo model {name!r} is made from another zoo model by `{DERIVED[name]}`, not by "
                             "zoo train")
    if tokens is not None and (not isinstance(tokens, int) or tokens <= 0):
        raise DecodeLabError(f"tokens must be a positive integer, got {tokens!r}")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps <= 0):
        raise DecodeLabError(f"max_steps must be a positive integer, got {max_steps!r}")
    if not isinstance(seed, int) or seed < 0:
        raise DecodeLabError(f"seed must be a non-negative integer, got {seed!r}")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise DecodeLabError(f"device must be cpu or cuda, got {device!r}")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DecodeLabError("device cuda asked for, but no CUDA device is available here; use --device cpu")
    if init_from is not None and not (Path(init_from) / "config.json").is_file():
        raise DecodeLabError(f"--init-from {init_from}: not a checkpoint directory (no config.json)")
    if stage not in ("all", "main", "context"):
        raise DecodeLabError(f"stage must be all, main or context, got {stage!r}")
    if stage == "context" and (RECIPES[name].context is None or init_from is None):
        raise DecodeLabError(f"--stage context runs the longer-context stage from a main-stage checkpoint: it needs "
                             f"--init-from" + ("" if RECIPES[name].context is not None else
                                                f", and {name}'s recipe has no context stage"))
    from decodelab.zoo import training as _train

    out = Path(out_dir) if out_dir is not None else Path.cwd() / f"zoo-{name}"
    return _train.run(
        RECIPES[name], device=device, tokens=tokens, seed=seed, out_dir=out, max_steps=max_steps,
        progress=progress, evaluate=evaluate, init_from=init_from, stage=stage, precision=precision,
    )
