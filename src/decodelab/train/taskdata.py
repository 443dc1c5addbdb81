"""Training data of the recipes that fine-tune or fit parts on a target (lud, first): windows of
the zoo code corpus, or examples of the zoo task suites.

`--data code|tasks` picks it; the default follows the target: `tasks` for a zoo model whose recipe
trains on the task suites (zoo:tasks-ar), else `code`. Task rows are built the way the zoo trains
and scores tasks-ar (zoo.batches.TaskBatches): prompt + target + end-of-text, right-padded with the
pad token to the longest row, the loss on the target tokens only, tasks drawn with the task
recipe's weights (train split) or the same number of test-split examples of every task (the
held-out figures). Padding never counts: it comes after each row's last real token (a causal model
never reads it for a real position), it is not an answer token (no loss, no lexical unit) and the
attention mask marks it.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import torch

from ..errors import DecodeLabError

DATA = ("code", "tasks")
DATA_HELP = ("training data: code (windows of the zoo code corpus) or tasks (examples of the zoo task suites, "
             "loss on the answers); default: tasks for a zoo model trained on the task suites (zoo:tasks-ar), "
             "else code")


def zoo_recipe(target: str):
    """The zoo recipe of `target` (zoo:NAME), or None for anything else."""
    from ..zoo.recipes import RECIPES

    return RECIPES.get(target[4:]) if target.startswith("zoo:") else None


def default_data(target: str) -> str:
    """`tasks` when `target` is a zoo model whose recipe trains on the task suites, else `code`."""
    recipe = zoo_recipe(target)
    return "tasks" if recipe is not None and recipe.data == "tasks" else "code"


def check_data(data: str) -> str:
    if data not in DATA:
        raise DecodeLabError(f"--data must be one of {', '.join(DATA)}, got {data!r}")
    return data


def add_data_argument(parser) -> None:
    """--data (left None: the recipe's command fills it in from the target, resolve_data)."""
    parser.add_argument("--data", default=None, help=DATA_HELP)


def resolve_data(args) -> None:
    """args.data from the target when not given; one clear error for a bad value."""
    args.data = check_data(args.data if args.data is not None else default_data(args.target))


@dataclass(frozen=True)
class TaskRows:
    """Task examples as right-padded rows. ids [N, T] (pad after each row's end), answer [N, T]
    (True on the target tokens, end-of-text included), attention [N, T] (1 on real tokens);
    tasks: each row's task name, when known."""

    ids: torch.Tensor
    answer: torch.Tensor
    attention: torch.Tensor
    tasks: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def prompt_len(self) -> torch.Tensor:
        """[N]: each row's prompt length (the index of its first answer token)."""
        return self.answer.int().argmax(1)

    @property
    def length(self) -> torch.Tensor:
        """[N]: each row's real length (prompt + answer)."""
        return self.attention.sum(1)

    def labels(self) -> torch.Tensor:
        """[N, T] next-token labels for a transformers loss: the ids on answer tokens, -100 elsewhere."""
        return torch.where(self.answer, self.ids, torch.full_like(self.ids, -100))


def task_recipe(target: str):
    """The zoo recipe whose task mix the rows follow: the target's own when it trains on tasks,
    else tasks-ar's."""
    from ..zoo.recipes import RECIPES

    recipe = zoo_recipe(target)
    return recipe if recipe is not None and recipe.data == "tasks" and recipe.kind == "causal" else RECIPES["tasks-ar"]


def _stack(batches: list[dict], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(b["input_ids"].shape[1] for b in batches)

    def right(x, fill):
        return torch.cat([torch.nn.functional.pad(b[x], (0, width - b[x].shape[1]), value=fill) for b in batches])
    return right("input_ids", pad), right("loss_mask", False), right("attention_mask", 0)


def task_rows(tokenizer, split: str, n: int, seed: int, target: str = "zoo:tasks-ar",
              per_task: bool = False) -> TaskRows:
    """`n` task examples of `split` as rows: drawn with the task recipe's weights, or, with
    `per_task`, `n` examples of every task of the recipe (in its order; rows' tasks named)."""
    from ..zoo.batches import TaskBatches

    if tokenizer is None or tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise DecodeLabError("task rows need a tokenizer with pad and end-of-text tokens (the zoo tokenizer)")
    recipe = dataclasses.replace(task_recipe(target), batch_size=n)
    if not per_task:
        b = next(TaskBatches(recipe, tokenizer, random.Random(f"{seed}:{split}"), split=split))
        return TaskRows(b["input_ids"], b["loss_mask"], b["attention_mask"])
    from ..zoo import tasks

    names = list(recipe.tasks or tasks.TASKS)
    batches = [next(TaskBatches(recipe, tokenizer, random.Random(f"{seed}:{split}:{t}"), split=split, names=[t]))
               for t in names]
    ids, answer, att = _stack(batches, tokenizer.pad_token_id)
    return TaskRows(ids, answer, att, tuple(t for t in names for _ in range(n)))
