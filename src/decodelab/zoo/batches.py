"""Training and evaluation batches: windows of the code corpus, examples of the task suites.

A batch is a dict: ``input_ids`` [B, T], ``loss_mask`` [B, T] (the tokens the loss is on)
and, for task batches, ``attention_mask`` [B, T].
"""

from __future__ import annotations

import random

import torch

from decodelab.zoo.recipes import Recipe

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


def code_windows(split: str, tokenizer, seq_len: int, n: int | None = None) -> torch.Tensor:
    """The non-overlapping ``seq_len`` windows of a split [N, seq_len]; ``n``: only that many,
    evenly spaced (all when there are no more than ``n``)."""
    stream = code_stream(split, tokenizer)
    count = len(stream) // seq_len
    windows = stream[: count * seq_len].view(count, seq_len)
    if n is not None and count > n:
        windows = windows[torch.linspace(0, count - 1, n).long()]
    return windows


def full_batch(x: torch.Tensor) -> dict:
    """A batch with the loss on every token (code windows)."""
    return {"input_ids": x, "loss_mask": torch.ones_like(x, dtype=torch.bool)}


class CodeBatches:
    """Random windows of ``seq_len`` tokens from the train stream."""

    def __init__(self, recipe: Recipe, tokenizer, gen: torch.Generator):
        self.stream = code_stream("train", tokenizer)
        self.recipe, self.gen = recipe, gen

    def __next__(self):
        L, B = self.recipe.seq_len, self.recipe.batch_size
        starts = torch.randint(0, len(self.stream) - L, (B,), generator=self.gen)
        return full_batch(torch.stack([self.stream[s : s + L] for s in starts.tolist()]))


def encode_example(ex, tokenizer) -> tuple[list[int], list[int]]:
    """Prompt ids and target ids (the target ends with end-of-text)."""
    p = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p, t


class TaskBatches:
    """Fresh task examples of ``split``, drawn with ``rng``: the recipe's tasks with its
    weights, or uniformly from ``names`` when given.

    Causal: prompt + target, right-padded with pad, loss on target tokens only.
    MDLM: prompt + target + end-of-text filler up to ``gen_len`` answer tokens (the canvas
    the diffusion decoder fills: prompt + gen_len masks), loss on the answer region only.
    """

    def __init__(self, recipe: Recipe, tokenizer, rng: random.Random, split: str = "train",
                 names: list[str] | None = None):
        from decodelab.zoo import tasks

        self.recipe, self.tok, self.rng, self.split, self.tasks = recipe, tokenizer, rng, split, tasks
        self.names = list(names or recipe.tasks or tasks.TASKS)
        self.weights = list(recipe.task_weights) if recipe.task_weights and names is None else None
        # the mdlm canvas is filled with end-of-text after the answer (what the decoder learns to emit)
        self.pad = tokenizer.pad_token_id if recipe.kind == "causal" else tokenizer.eos_token_id

    def _row(self) -> tuple[list[int], list[bool]]:
        if self.weights:
            task = self.rng.choices(self.names, weights=self.weights)[0]
        else:
            task = self.rng.choice(self.names)
        p, t = encode_example(self.tasks.sample(task, self.split, self.rng), self.tok)
        if self.recipe.kind == "mdlm":
            g = self.recipe.gen_len
            t = (t + [self.pad] * g)[:g]
        L = self.recipe.seq_len
        return (p + t)[:L], ([False] * len(p) + [True] * len(t))[:L]

    def __next__(self):
        rows = [self._row() for _ in range(self.recipe.batch_size)]
        B, width = len(rows), max(len(r) for r, _ in rows)
        x = torch.full((B, width), self.pad, dtype=torch.long)
        lm = torch.zeros((B, width), dtype=torch.bool)
        att = torch.zeros((B, width), dtype=torch.long)
        for i, (r, m) in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r)
            lm[i, : len(m)] = torch.tensor(m)
            att[i, : len(r)] = 1
        return {"input_ids": x, "loss_mask": lm, "attention_mask": att}
