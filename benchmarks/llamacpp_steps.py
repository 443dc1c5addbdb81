"""Per-step cost of the llama.cpp backend's forward (docs/llamacpp.md), against llama.cpp's own timer.

    .venv/bin/python benchmarks/llamacpp_steps.py --model zoo:code-target --threads 1

After a prefill of a held-out code prompt, each configuration (a chain of 1, 5, 9, 33 tokens, and a
16-node tree: a root with 3 children, each with a chain of 5 below it) is forwarded `--repeats`
times, each followed by the commit a speculative step makes (the root alone kept). Printed per
configuration: llama.cpp's decode time per call (llama_perf_context: t_eval + t_p_eval over the
calls), the wall time of the adapter's forward per call (median; it includes llama.cpp's time, the
batch filling, the sequence copies of a tree and the logits copy), and the commit's wall time.
Then greedy decoding of `--new` tokens on the backend against llama-cpp-python's own high-level
greedy (Llama.generate with top_k=1 on the same GGUF and threads; its default f16 KV cache and flash
attention set to ours): tokens/s (prefill included, best of 5 after a warm-up, alternating), and
whether both produced the same tokens.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import decodelab
from decodelab.core.tree import TokenTree
from decodelab.models import prefill


def tree16(root: int) -> TokenTree:
    parents = [-1] + [0, 0, 0]
    for top in (1, 2, 3):
        prev = top
        for _ in range(4):
            parents.append(prev)
            prev = len(parents) - 1
    return TokenTree.from_lists([root] + [(17 * i) % 4000 + 3 for i in range(1, len(parents))], parents)


def measure(lm, prompt: list[int], repeats: int) -> list[dict]:
    rows = []
    base = len(prompt) - 1
    configs = [(f"chain {n}", TokenTree.chain([prompt[-1]] + [(31 * i) % 4000 + 3 for i in range(1, n)]))
               for n in (1, 5, 9, 33)] + [("tree 16", tree16(prompt[-1]))]
    for name, tree in configs:
        lm.reset()
        prefill(lm, torch.tensor(prompt[:-1]))
        mask = None if tree.is_chain else tree.attention_mask
        pos = tree.positions(base)
        for _ in range(3):  # warm-up
            lm.forward(tree.tokens, pos, tree_mask=mask)
            lm.commit([0])
            lm.truncate(base)
        lm.perf_reset()
        fwd, com = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            lm.forward(tree.tokens, pos, tree_mask=mask)
            t1 = time.perf_counter()
            lm.commit([0])
            t2 = time.perf_counter()
            lm.truncate(base)
            fwd.append(t1 - t0)
            com.append(t2 - t1)
        perf = lm.perf()
        rows.append({"config": name, "tokens": len(tree), "llama_ms": (perf["eval_ms"] + perf["prompt_ms"]) / repeats,
                     "forward_ms": 1e3 * statistics.median(fwd), "commit_ms": 1e3 * statistics.median(com)})
    return rows


def greedy_race(lm, path: str, prompt: list[int], new: int, threads: int, repeats: int = 5) -> dict:
    """Tokens/s of greedy decoding (prefill included), best of `repeats` runs each after one warm-up,
    the two engines alternating."""
    from llama_cpp import Llama

    peer = Llama(model_path=path, n_ctx=lm.max_length, n_threads=threads, n_threads_batch=threads,
                 verbose=False, type_k=0, type_v=0, flash_attn=False)

    def ours():
        return decodelab.generate(lm, prompt, max_new_tokens=new, ignore_eos=True).tokens

    def theirs():
        peer.reset()  # cold, as ours: generate() would otherwise reuse the previous run's prompt cache
        out = []
        for tok in peer.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            out.append(tok)
            if len(out) == new:
                return out

    times = {"ours": [], "theirs": []}
    outs = {"ours": ours(), "theirs": theirs()}  # warm-up
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("theirs", theirs)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {"ours_tok_s": new / min(times["ours"]), "llama_cpp_python_tok_s": new / min(times["theirs"]),
            "same": outs["ours"] == outs["theirs"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:code-target", help="a .gguf file, model directory or zoo:NAME")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--new", type=int, default=128, help="new tokens of the greedy race")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = decodelab.load(args.model, backend="llamacpp")
    from decodelab.bench import workloads

    prompt = list(workloads.build("humaneval", lm, limit=1).prompts[0])
    print(f"model {args.model}, prompt {len(prompt)} tokens, threads {args.threads}, {args.repeats} calls each")
    print(f"{'config':<10} {'tokens':>6} {'llama.cpp ms':>13} {'forward ms':>11} {'commit ms':>10}")
    for r in measure(lm, prompt, args.repeats):
        print(f"{r['config']:<10} {r['tokens']:>6} {r['llama_ms']:>13.3f} {r['forward_ms']:>11.3f} {r['commit_ms']:>10.3f}")
    new = min(args.new, lm.max_length - len(prompt))
    race = greedy_race(lm, str(lm.weights.path), prompt, new, args.threads)
    print(f"greedy, {new} new tokens: decodelab on llama.cpp {race['ours_tok_s']:.0f} tok/s, llama-cpp-python "
          f"Llama.generate {race['llama_cpp_python_tok_s']:.0f} tok/s, same tokens: {race['same']}")


if __name__ == "__main__":
    main()
