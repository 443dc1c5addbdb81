"""exact-extract against brute force on zoo task prompts (docs/search.md, "exact-extract").

    .venv/bin/python benchmarks/extract.py --limit 20 --threads 1

For each prompt of the zoo list tasks (copy, reverse, remove_at, ...; zoo:tasks-ar reads the
prompt and answers a line), the most probable span of the prompt up to the newline that ends an
answer, computed by decodelab.extract (every start in batched forwards over the cached prompt)
and by extract_brute_force (one forward per span). Prints whether the two agree on every case
(same best span, every span's score within 1e-4), the cost of each (target forwards, tokens
scored, seconds), and how often the extracted span is the task's answer (copy: always a span).
"""
from __future__ import annotations

import argparse
import time

import torch

import decodelab
from decodelab.extraction import extract_brute_force, span_scores
from decodelab.zoo import tasks

TASKS = ("copy", "reverse", "sort", "remove_at", "insert_at", "replace_at")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=20, help="prompts per task")
    ap.add_argument("--max-answer-len", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = decodelab.load("zoo:tasks-ar")
    newline = model.tokenizer("\n", add_special_tokens=False)["input_ids"]
    print("| task | cases | same best span | max score diff | exact fwd | exact tok | exact s | brute fwd | brute tok "
          "| brute s | span = answer |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for task in TASKS:
        same, diff, right, cost = 0, 0.0, 0, {"ef": 0, "et": 0, "es": 0.0, "bf": 0, "bt": 0, "bs": 0.0}
        exs = tasks.examples(task, "test", args.limit, seed=0)
        for ex in exs:
            t0 = time.perf_counter()
            got = decodelab.extract(model, ex.prompt, end=newline, max_answer_len=args.max_answer_len)
            t1 = time.perf_counter()
            ref, fwd, tok = extract_brute_force(model, ex.prompt, end=newline, max_answer_len=args.max_answer_len)
            t2 = time.perf_counter()
            ids = model.tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
            ours = span_scores(model.fresh(), ids, ids, newline, args.max_answer_len, 1024)
            ok = torch.isfinite(ref)
            i, j = divmod(int(ref.flatten().argmax()), ref.shape[1])
            same += (got.best.start, got.best.end) == (i, i + j + 1)
            diff = max(diff, float((ours[ok] - ref[ok]).abs().max()))
            right += got.text == ex.target.rstrip("\n")
            cost["ef"] += got.forwards
            cost["et"] += got.tokens_scored
            cost["es"] += t1 - t0
            cost["bf"] += fwd
            cost["bt"] += tok
            cost["bs"] += t2 - t1
        n = len(exs)
        print(f"| {task} | {n} | {same}/{n} | {diff:.1e} | {cost['ef'] / n:.1f} | {cost['et'] / n:.0f} | "
              f"{cost['es'] / n:.3f} | {cost['bf'] / n:.0f} | {cost['bt'] / n:.0f} | {cost['bs'] / n:.3f} | "
              f"{right}/{n} |", flush=True)


if __name__ == "__main__":
    main()
