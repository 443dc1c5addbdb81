"""Synthetic task suites, generated from seeds, with train / test splits and scorers.

Waiting-line list tasks (after ParallelBench): a line of 3-6 distinct names from the
bundled list ``data/names.txt`` (27 short names, each two tokens in the zoo tokenizer with
distinct first tokens), and an operation on it::

    copy: Ann, Bob, Cid =>                       target " Ann, Bob, Cid\\n"
    reverse: Ann, Bob, Cid =>                    target " Cid, Bob, Ann\\n"
    sort: Cid, Ann, Bob =>                       target " Ann, Bob, Cid\\n"
    shuffle: Ann, Bob, Cid =>                    any other order of the same names
    insert Dan at 1: Ann, Bob, Cid =>            target " Ann, Dan, Bob, Cid\\n"   (0-based)
    remove at 1: Ann, Bob, Cid =>                target " Ann, Cid\\n"
    replace at 1 with Dan: Ann, Bob, Cid =>      target " Ann, Dan, Cid\\n"
    insert Dan anywhere: Ann, Bob, Cid =>        Dan inserted at any position
    remove any: Ann, Bob, Cid =>                 any one name removed, order kept
    replace any with Dan: Ann, Bob, Cid =>       any one name replaced by Dan

Arithmetic, with the intermediate steps written out (2-3 steps, operands 0-99, no
negative intermediate results)::

    calc: 23+45-12 =>                            target " 23+45=68, 68-12=56, answer 56\\n"

Every target starts with a space and ends with a newline; models add end-of-text after it.
For the open-ended tasks (shuffle, the random edits) the target is one valid answer (the
training signal), and the scorer accepts any valid answer.

Splits: an instance is in the test split when ``sha256(prompt)`` modulo 10 is 0, else in
the train split; generators draw instances until they fall in the asked split, so the two
splits never share a prompt.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from decodelab.errors import DecodeLabError

LIST_TASKS = (
    "copy",
    "reverse",
    "sort",
    "shuffle",
    "insert_at",
    "remove_at",
    "replace_at",
    "insert_random",
    "remove_random",
    "replace_random",
)
TASKS: tuple[str, ...] = LIST_TASKS + ("arithmetic",)
SPLITS = ("train", "test")
MIN_LEN, MAX_LEN = 3, 6
NAMES: tuple[str, ...] = tuple(
    line.strip() for line in (Path(__file__).parent / "data" / "names.txt").read_text().splitlines() if line.strip()
)


@dataclass(frozen=True)
class Example:
    prompt: str
    target: str
    task: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def split_of(prompt: str) -> str:
    return "test" if int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) % 10 == 0 else "train"


def _fmt(items) -> str:
    return ", ".join(items)


def _make_list(task: str, rng: random.Random) -> Example:
    n = rng.randint(MIN_LEN, MAX_LEN)
    items = rng.sample(NAMES, n)
    extra = rng.choice([x for x in NAMES if x not in items])
    meta = {"items": items}
    if task == "copy":
        head, out = "copy", list(items)
    elif task == "reverse":
        head, out = "reverse", items[::-1]
    elif task == "sort":
        head, out = "sort", sorted(items)
    elif task == "shuffle":
        head = "shuffle"
        out = list(items)
        while out == items:
            rng.shuffle(out)
    elif task == "insert_at":
        i = rng.randint(0, n)
        head, out = f"insert {extra} at {i}", items[:i] + [extra] + items[i:]
        meta.update(name=extra, index=i)
    elif task == "remove_at":
        i = rng.randrange(n)
        head, out = f"remove at {i}", items[:i] + items[i + 1 :]
        meta.update(index=i)
    elif task == "replace_at":
        i = rng.randrange(n)
        head, out = f"replace at {i} with {extra}", items[:i] + [extra] + items[i + 1 :]
        meta.update(name=extra, index=i)
    elif task == "insert_random":
        i = rng.randint(0, n)
        head, out = f"insert {extra} anywhere", items[:i] + [extra] + items[i:]
        meta.update(name=extra)
    elif task == "remove_random":
        i = rng.randrange(n)
        head, out = "remove any", items[:i] + items[i + 1 :]
    elif task == "replace_random":
        i = rng.randrange(n)
        head, out = f"replace any with {extra}", items[:i] + [extra] + items[i + 1 :]
        meta.update(name=extra)
    else:  # pragma: no cover - guarded by sample()
        raise AssertionError(task)
    meta["answer"] = out
    return Example(f"{head}: {_fmt(items)} =>", f" {_fmt(out)}\n", task, meta)


def _make_arith(rng: random.Random) -> Example:
    steps = rng.randint(2, 3)
    acc = rng.randint(0, 99)
    expr = str(acc)
    parts = []
    for _ in range(steps):
        b = rng.randint(0, 99)
        op = rng.choice("+-")
        if op == "-" and b > acc:
            op = "+"
        new = acc + b if op == "+" else acc - b
        parts.append(f"{acc}{op}{b}={new}")
        expr += f"{op}{b}"
        acc = new
    return Example(f"calc: {expr} =>", f" {', '.join(parts)}, answer {acc}\n", "arithmetic", {"answer": acc})


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise DecodeLabError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")


def sample(task: str, split: str, rng: random.Random) -> Example:
    """One example of ``task`` from ``split``, drawn with ``rng``."""
    _check_task(task)
    if split not in SPLITS:
        raise DecodeLabError(f"unknown task split {split!r}; choose one of {', '.join(SPLITS)}")
    while True:
        ex = _make_arith(rng) if task == "arithmetic" else _make_list(task, rng)
        if split_of(ex.prompt) == split:
            return ex


def examples(task: str, split: str = "test", n: int = 100, seed: int = 0) -> list[Example]:
    """``n`` examples of ``task`` from ``split``, deterministic in ``seed``."""
    if n < 0:
        raise DecodeLabError("n must be non-negative")
    rng = random.Random(f"{task}:{split}:{seed}")
    return [sample(task, split, rng) for _ in range(n)]


def parse_list(text: str) -> list[str]:
    line = text.split("\n", 1)[0].strip()
    return [x.strip() for x in line.split(",")] if line else []


_ANSWER = re.compile(r"answer\s+(-?\d+)")


def score(example: Example, output_text: str) -> bool:
    """Is ``output_text`` (the model's continuation of the prompt) right for ``example``?

    Only the first line counts. Exact match for the deterministic tasks; shuffle: the same
    names in a different order; random edits: any valid edit; arithmetic: the final answer.
    """
    task = example.task
    _check_task(task)
    if task == "arithmetic":
        m = _ANSWER.findall(output_text.split("\n", 1)[0])
        return bool(m) and int(m[-1]) == example.meta["answer"]
    out = parse_list(output_text)
    items = list(example.meta["items"])
    if task == "shuffle":
        return sorted(out) == sorted(items) and out != items
    if task == "insert_random":
        name = example.meta["name"]
        return len(out) == len(items) + 1 and any(
            out[i] == name and out[:i] + out[i + 1 :] == items for i in range(len(out))
        )
    if task == "remove_random":
        return len(out) == len(items) - 1 and any(items[:i] + items[i + 1 :] == out for i in range(len(items)))
    if task == "replace_random":
        name = example.meta["name"]
        if len(out) != len(items):
            return False
        diff = [i for i in range(len(items)) if out[i] != items[i]]
        return len(diff) == 1 and out[diff[0]] == name
    return out == list(example.meta["answer"])
