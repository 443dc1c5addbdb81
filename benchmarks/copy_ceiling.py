"""How fast can copying drafts get? Replays the target's greedy text under its measured cost curve.

Copy drafts (prompt lookup, pld, samd's copies) guess the next tokens from an earlier occurrence
of the context's suffix. This script asks how far that can go on a model and workload, without
timing any loop: it makes the target's greedy continuation of each prompt, measures the target's
forward cost curve (models/costs.py, cached), and walks each continuation step by step, charging
a step of n tokens what the curve says an n-token forward costs (no Python, no prefill) under:

- lookup: llama-cpp-python's LlamaPromptLookupDecoding itself (n-grams of up to 2 tokens, the
  earliest occurrence, 10 tokens), the `llamacpp:prompt-lookup` bench row (so the [llamacpp] extra
  is needed);
- pld's rule: pld's own match (methods/pld.py, NgramIndex: the longest recurring suffix of up to
  10 tokens, its most recent occurrence), the length chosen by core.costs.AutoLength from the
  acceptance so far per matched length (clock off);
- length oracle: the same copy, drafting exactly as many tokens as will be accepted (the best
  any length rule can do with pld's candidate);
- full oracle: the best copy after any recurring suffix, from any earlier occurrence, at the best
  length (the best any single-copy drafter can do).

Drafts are capped at the curve's length (15 tokens, the auto lengths' cap). It prints the speed
x greedy and x the lookup (medians over prompts of the per-prompt ratios), for the decoding alone
and with each prompt's prefill added to every rule's time (the fastest of 3 one-token
generations), as the bench's timings include it.

    DECODELAB_NUM_THREADS=1 python benchmarks/copy_ceiling.py --model zoo:code-target-l
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
from tqdm import tqdm

import decodelab
from decodelab.bench import workloads
from decodelab.core.costs import AutoLength
from decodelab.methods.pld import NgramIndex, PLDConfig
from decodelab.models import costs


def accepted(seq: list[int], src: int, pos: int, cap: int) -> int:
    """Tokens a copy from seq[src] gets right at seq[pos] (an overlapping copy reads its own)."""
    a = 0
    while a < cap and pos + a < len(seq) and seq[src + a] == seq[pos + a]:
        a += 1
    return a


def sources(seq: list[int], pos: int, n: int) -> list[int]:
    """Where the copies after earlier occurrences of seq[pos - n:pos] start, most recent first."""
    suffix = seq[pos - n:pos]
    return [j + n for j in range(pos - n - 1, -1, -1) if seq[j:j + n] == suffix]


def replay(seq: list[int], start: int, curve: list[float], rule: str) -> float:
    """Seconds to commit seq[start:] under `rule`, a step of n tokens costing curve[n]."""
    cap, t, pos = len(curve) - 2, 0.0, start
    auto = AutoLength(curve, clock=None) if rule == "pld" else None
    index = NgramIndex(PLDConfig())  # pld's defaults: n-grams of 1 to 10 tokens, the most recent

    def best(a: int) -> int:  # the length with the most tokens per second when a tokens are right
        return max(range(a + 1), key=lambda g: (g + 1) / curve[g + 1])

    while pos < len(seq):
        room = min(cap, len(seq) - pos - 1)
        if rule == "lookup":
            draft = LlamaPromptLookupDecoding.find_candidate_pred_tokens(
                np.array(seq[:pos], dtype=np.intc), max_ngram_size=2, num_pred_tokens=10).tolist()[:room]
            g, a = len(draft), 0
            while a < g and draft[a] == seq[pos + a]:
                a += 1
        elif rule == "full":
            a = max((accepted(seq, s, pos, room) for n in range(1, min(10, pos - 1) + 1)
                     for s in sources(seq, pos, n)), default=0)
            g = a = best(a)
        else:
            index.extend(torch.tensor(seq[:pos]))
            m = index.find()
            if m is None:
                g = a = 0
            elif rule == "pld":
                g = auto.length(room, key=m[0]) if room else 0
                a = accepted(seq, m[1], pos, g)
                auto.update(g, a, key=m[0])
            else:  # the length oracle
                g = a = best(accepted(seq, m[1], pos, room))
        t += curve[g + 1]
        pos += a + 1
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:code-target-l")
    ap.add_argument("--backend", default="llamacpp")
    ap.add_argument("--workload", action="append", help="default: humaneval and code-heldout")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    args = ap.parse_args()
    lm = decodelab.load(args.model, backend=args.backend)
    curve = costs.curve(lm)
    print("cost curve, ms for 1..%d tokens:" % (len(curve) - 1), " ".join(f"{1e3 * c:.2f}" for c in curve[1:]))
    rules = {"lookup": "llama-cpp-python's lookup", "pld": "pld's rule", "length": "length oracle",
             "full": "full oracle"}
    for name in args.workload or ["humaneval", "code-heldout"]:
        prompts = workloads.build(name, lm, limit=args.limit, max_new_tokens=args.max_new_tokens).prompts
        times = {r: [] for r in rules}  # (decoding, prefill) seconds per prompt
        for p in tqdm(prompts, desc=f"{name}: greedy paths", leave=False):
            out = decodelab.generate(lm, list(p), "greedy", max_new_tokens=args.max_new_tokens, ignore_eos=True)
            seq, start = list(p) + list(out.tokens), len(p)
            prefill = min(timed(lm, p) for _ in range(3))
            for r in rules:
                times[r].append((replay(seq, start, curve, r), prefill))
            times.setdefault("greedy", []).append(((len(seq) - start) * curve[1], prefill))
        print(f"{name} ({len(prompts)} prompts, {args.max_new_tokens} new tokens), per-prompt medians, "
              "decoding alone / with the prefill:")
        for r, label in rules.items():
            cells = []
            for over in ("greedy", "lookup"):
                for with_prefill in (0, 1):
                    ratios = [(b[0] + with_prefill * b[1]) / (a[0] + with_prefill * a[1])
                              for a, b in zip(times[r], times[over])]
                    cells.append(f"{statistics.median(ratios):.2f}")
            print(f"  {label:27s} x greedy {cells[0]} / {cells[1]}   x the lookup {cells[2]} / {cells[3]}")


def timed(lm, prompt) -> float:
    """Seconds of a one-token generation: the prompt's prefill."""
    t0 = time.perf_counter()
    decodelab.generate(lm, list(prompt), "greedy", max_new_tokens=1, ignore_eos=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
