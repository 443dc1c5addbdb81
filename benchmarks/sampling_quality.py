"""The quality figures of docs/sampling.md (issue 13): Mirostat's observed surprise against tau,
Diverse Beam Search's distinct-n against beam search, Superposed Decoding's speed and perplexity
against separate sampling runs. One process, one torch thread, zoo:code-target on the
code-heldout workload (held-out standard-library prefixes).

    DECODELAB_NUM_THREADS=1 python benchmarks/sampling_quality.py [mirostat|diverse|superposed ...]
        [--prompts 20] [--out bench-out/sampling] [--plot docs/img/mirostat-surprise.png]

Mirostat generates, by default, the most new tokens the model's context leaves after the longest
prompt (zoo:code-target: 256 - 64 = 192; the issue's 256 new tokens do not fit).

Prints one JSON object per part and writes them to OUT/<part>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

import decodelab
from decodelab.bench import workloads
from decodelab.core.diversity import distinct_n, mean


def prompts(target, n: int, new: int) -> list[list[int]]:
    return [list(p) for p in workloads.build("code-heldout", target, limit=n, max_new_tokens=new).prompts]


def logp_of(target, prompt: list[int], tokens: list[int]) -> list[float]:
    """Each token's log p under the target (teacher-forced, the raw distribution)."""
    with torch.inference_mode():
        ids = torch.tensor([prompt + tokens])
        logp = torch.log_softmax(target.model(ids).logits[0, len(prompt) - 1:-1].double(), -1)
    return logp[torch.arange(len(tokens)), torch.tensor(tokens)].tolist()


def room(target, n: int) -> int:
    """The most new tokens that fit after the longest of the first n prompts (prompt + new <= the
    model's context)."""
    return target.max_length - max(len(p) for p in prompts(target, n, 1))


def mirostat(target, n: int, new: int | None, plot: str | None) -> dict:
    new = new or room(target, n)
    ps = prompts(target, n, new)
    rows, traces = [], {}
    for version in (1, 2):
        for tau in (2.0, 3.0, 4.0, 5.0):
            per_prompt, pooled, late = [], [], []
            for i, p in enumerate(ps):
                out = decodelab.generate(target, p, "mirostat", version=version, tau=tau, seed=i, max_new_tokens=new,
                                         ignore_eos=True, logprobs=True)
                bits = [-lp / math.log(2) for lp in out.logprobs]
                per_prompt.append(statistics.fmean(bits))
                pooled += bits
                late += bits[len(bits) // 2:]
                if i == 0:
                    traces[(version, tau)] = bits
            m = statistics.fmean(pooled)
            rows.append({"version": version, "tau": tau, "mean_surprise_bits": round(m, 3),
                         "error_bits": round(m - tau, 3), "within_0.3": abs(m - tau) <= 0.3,
                         "second_half_bits": round(statistics.fmean(late), 3),  # mu settled from 2 tau
                         "per_prompt_min": round(min(per_prompt), 3), "per_prompt_max": round(max(per_prompt), 3),
                         "tokens": len(pooled)})
    plain = []
    for i, p in enumerate(ps):
        out = decodelab.generate(target, p, "sample", seed=i, max_new_tokens=new, ignore_eos=True, logprobs=True)
        plain += [-lp / math.log(2) for lp in out.logprobs]
    # plain sampling never truncates: its mean surprise is the most any tau can reach on these prompts
    result = {"prompts": len(ps), "new_tokens": new, "prompt_tokens": sorted({len(p) for p in ps}),
              "context": target.max_length, "eta": 0.1, "rows": rows,
              "plain_sampling_bits": round(statistics.fmean(plain), 3)}
    if plot:
        _plot(traces, plot)
        result["plot"] = plot
    return result


def _plot(traces: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, version in zip(axes, (1, 2)):
        for tau, colour in zip((2.0, 3.0, 4.0, 5.0), ("C0", "C1", "C2", "C3")):
            bits = traces[(version, tau)]
            run = [statistics.fmean(bits[: i + 1]) for i in range(len(bits))]
            ax.plot(bits, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(run, color=colour, linewidth=1.8, label=f"tau = {tau:g} (running mean)")
            ax.axhline(tau, color=colour, linestyle=":", linewidth=1)
        ax.set_title(f"Mirostat v{version}, zoo:code-target, held-out prompt 1")
        ax.set_xlabel("generated token")
        ax.set_ylim(0, 16)
    axes[0].set_ylabel("surprise -log2 p (bits, the target's own p)")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def diverse(target, n: int, new: int, beams: int = 6, groups: int = 3, lam: float = 0.5) -> dict:
    ps = prompts(target, n, new)
    out = {}
    for name, kw in (("beam", dict(num_beams=beams)),
                     ("diverse_beam", dict(num_beams=beams, num_beam_groups=groups, diversity_penalty=lam))):
        d = {1: [], 2: [], 3: []}
        best_lp, all_lp = [], []
        for p in ps:
            o = decodelab.generate(target, p, name, max_new_tokens=new, ignore_eos=True, **kw)
            for k in d:
                d[k].append(distinct_n(o.sequences, k))
            lps = [logp_of(target, p, s) for s in o.sequences]
            best_lp.append(statistics.fmean(lps[0]))
            all_lp.append(statistics.fmean(x for lp in lps for x in lp))
        out[name] = {**{f"distinct_{k}": round(mean(v), 3) for k, v in d.items()},
                     "best_logp_per_token": round(statistics.fmean(best_lp), 3),
                     "all_beams_logp_per_token": round(statistics.fmean(all_lp), 3)}
    given_up = {k: round(out["beam"][k] - out["diverse_beam"][k], 3)
                for k in ("best_logp_per_token", "all_beams_logp_per_token")}
    return {"prompts": len(ps), "new_tokens": new, "num_beams": beams, "num_beam_groups": groups,
            "diversity_penalty": lam, **out, "logp_given_up_per_token": given_up}


def superposed(target, n: int, new: int, k: int = 3, repeats: int = 2) -> dict:
    ps = prompts(target, n, new)
    decodelab.generate(target, ps[0], "superposed", num_drafts=k, max_new_tokens=4)  # n-gram tables: built or loaded
    for p in ps[:2]:  # warm-up
        decodelab.generate(target, p, "sample", seed=0, max_new_tokens=new, ignore_eos=True)
        decodelab.generate(target, p, "superposed", num_drafts=k, max_new_tokens=new, ignore_eos=True)
    t_sup, t_sep = [], []
    sup_seqs, samp_seqs, sup_fw, sep_fw = [], [], 0, 0
    for r in range(repeats):  # interleaved, so both see the same machine load
        a = b = 0.0
        for i, p in enumerate(ps):
            t0 = time.perf_counter()
            o = decodelab.generate(target, p, "superposed", num_drafts=k, max_new_tokens=new, ignore_eos=True)
            a += time.perf_counter() - t0
            t0 = time.perf_counter()
            s = [decodelab.generate(target, p, "sample", seed=1000 * j + i, max_new_tokens=new, ignore_eos=True)
                 for j in range(k)]
            b += time.perf_counter() - t0
            if r == 0:
                sup_seqs.append((p, o.sequences))
                samp_seqs.append((p, [x.tokens for x in s]))
                sup_fw += o.stats.target_forwards
                sep_fw += sum(x.stats.target_forwards for x in s)
        t_sup.append(a)
        t_sep.append(b)
    tokens = sum(len(seq) for _, seqs in sup_seqs for seq in seqs)
    tokens_sep = sum(len(seq) for _, seqs in samp_seqs for seq in seqs)

    def ppl(pairs):
        lps = [x for p, seqs in pairs for s in seqs for x in logp_of(target, p, s)]
        return round(math.exp(-statistics.fmean(lps)), 3)

    greedy = [(p, [decodelab.generate(target, p, max_new_tokens=new, ignore_eos=True).tokens]) for p in ps]
    top_p = [(p, [decodelab.generate(target, p, "sample", top_p=0.9, seed=i, max_new_tokens=new,
                                     ignore_eos=True).tokens]) for i, p in enumerate(ps)]
    sup_tps = [tokens / t for t in t_sup]
    sep_tps = [tokens_sep / t for t in t_sep]
    return {"prompts": len(ps), "new_tokens": new, "k": k, "repeats": repeats,
            "superposed_tokens_per_s_median": round(statistics.median(sup_tps), 1),
            "separate_sampling_tokens_per_s_median": round(statistics.median(sep_tps), 1),
            "speedup_median": round(statistics.median(a / b for a, b in zip(sup_tps, sep_tps)), 2),
            "speedups": [round(a / b, 2) for a, b in zip(sup_tps, sep_tps)],
            "target_forwards": {"superposed": sup_fw, "separate": sep_fw},
            "completion_tokens": {"superposed": tokens, "separate": tokens_sep},
            "distinct_2_across_k": {"superposed": round(mean(distinct_n(s, 2) for _, s in sup_seqs), 3),
                                    "sampling": round(mean(distinct_n(s, 2) for _, s in samp_seqs), 3)},
            "perplexity_under_target": {"superposed": ppl(sup_seqs), "sampling": ppl(samp_seqs),
                                        "top_p_0.9": ppl(top_p), "greedy": ppl(greedy)}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", nargs="*", default=["mirostat", "diverse", "superposed"])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--out", default="bench-out/sampling")
    ap.add_argument("--plot", default=None, help="Mirostat's surprise-over-time PNG")
    ap.add_argument("--mirostat-tokens", type=int, default=None,
                    help="default: the most the context leaves after the longest prompt")
    ap.add_argument("--beam-tokens", type=int, default=48)
    ap.add_argument("--superposed-tokens", type=int, default=48)
    ap.add_argument("--superposed-prompts", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="superposed: timed passes over the prompts")
    a = ap.parse_args()
    torch.set_num_threads(1)
    target = decodelab.load("zoo:code-target", dtype=torch.float32)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    for part in a.parts:
        t0 = time.perf_counter()
        if part == "mirostat":
            r = mirostat(target, a.prompts, a.mirostat_tokens, a.plot)
        elif part == "diverse":
            r = diverse(target, a.prompts, a.beam_tokens)
        else:
            r = superposed(target, a.superposed_prompts, a.superposed_tokens, repeats=a.repeats)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        (Path(a.out) / f"{part}.json").write_text(json.dumps(r, indent=2))
        print(json.dumps({part: r}), flush=True)


if __name__ == "__main__":
    main()
