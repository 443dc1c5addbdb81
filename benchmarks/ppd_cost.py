"""PPD on this CPU: the forward cost of zoo:code-target against tokens per forward (median of 30 tree forwards at a
128-token context, one thread) and ppd's tau per budget on 4 HumanEval + 4 held-out prompts (128 new tokens), with
the speed they imply (tau * cost(1) / cost(budget)).
  python benchmarks/ppd_cost.py
"""
import time, torch, statistics
torch.set_num_threads(1)
import decodelab
from decodelab.bench import workloads
t = decodelab.load('zoo:code-target').fresh()
ctx = torch.randint(0, 4096, (128,))
res = {}
for n in [1, 2, 4, 6, 8, 12, 16, 24, 32]:
    times = []
    for r in range(30):
        t.reset(); t.forward(ctx, torch.arange(128))
        ids = torch.randint(0, 4096, (n,))
        mask = torch.tril(torch.ones(n, n, dtype=torch.bool))
        s = time.perf_counter(); t.forward(ids, torch.arange(128, 128 + n), tree_mask=mask if n > 1 else None); times.append(time.perf_counter() - s)
    res[n] = statistics.median(times) * 1000
print("cost ms:", {k: round(v, 2) for k, v in res.items()})
target = decodelab.load('zoo:code-target')
prompts = workloads.build("humaneval", target, limit=4).prompts + workloads.build("code-heldout", target, limit=4).prompts
for b in [4, 6, 8, 12, 16]:
    taus = [decodelab.generate(target, list(p), "ppd", budget=b, max_new_tokens=128, ignore_eos=True).stats.tau for p in prompts]
    print("budget", b, "tau", round(sum(taus) / len(taus), 3), "est speed vs greedy", round(sum(taus) / len(taus) * res[1] / res[b], 3))
