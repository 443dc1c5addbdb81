"""Does a process whose drafting once looked hopeless draft again? (core/costs.py, AutoLength.rest)

pld's step times for this model are kept per process (models/costs.clock) and outlive a
generation. This fills them as a busy minute could (every drafted length 0.5 s over the curve:
no draft pays even if always accepted), then runs generations of 128 tokens on HumanEval prompts
and prints each one's tau (1.00: it never drafted).

    DECODELAB_NUM_THREADS=1 python benchmarks/rest_recovery.py --model zoo:code-target-l
"""
from __future__ import annotations

import argparse
from collections import deque

import decodelab
from decodelab.bench import workloads
from decodelab.core import costs as auto_costs
from decodelab.models import costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:code-target-l")
    ap.add_argument("--backend", default="llamacpp")
    ap.add_argument("--generations", type=int, default=16)
    ap.add_argument("--busy", type=float, default=0.5, help="seconds over the curve set for every drafted length")
    args = ap.parse_args()
    lm = decodelab.load(args.model, backend=args.backend)
    prompts = workloads.build("humaneval", lm, limit=8).prompts
    decodelab.generate(lm, list(prompts[0]), "pld", max_new_tokens=8, ignore_eos=True)  # the curve, measured once
    seen = costs.clock(lm, "pld")
    seen.clear()
    for g in range(1, costs.N_MAX):
        seen[g] = deque([args.busy] * auto_costs.RECENT, maxlen=auto_costs.RECENT)
    taus = []
    for i in range(args.generations):
        out = decodelab.generate(lm, list(prompts[i % len(prompts)]), "pld", max_new_tokens=128, ignore_eos=True)
        taus.append(f"{out.stats.tau:.2f}")
    print("tau per generation:", " ".join(taus))


if __name__ == "__main__":
    main()
