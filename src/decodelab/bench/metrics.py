"""From raw records to row figures: pure arithmetic, no model, no clock.

Per row (all figures from the unit that reports the row, so every ratio is inside one run):
  tokens/s       per prompt: new tokens / median seconds over repeats; the row: median over
                 prompts, spread = interquartile range [q25, q75]
  speedup        per prompt: row tokens/s / reference tokens/s (our greedy; transformers greedy;
                 llama.cpp's greedy when the run has a llamacpp:greedy row);
                 the row: median over prompts, with its IQR. cpu_speedup_vs_greedy: the same on
                 process CPU time, which a busy machine's waits for a core do not inflate.
                 pooled_speedup_vs_greedy: the workload's total new tokens over its total time
                 (each prompt's median over repeats), the row's over our greedy's, on the prompts
                 both completed: what the whole workload takes. It weighs a prompt by its time,
                 where the median ratio weighs prompts alike, so a row that gains a little on most
                 prompts and loses much on a few has a median above its pooled figure (sps gamma 2
                 on zoo:code-target on torch, HumanEval: 1.12 median, 0.97 pooled)
  tau            tokens committed / target forwards (bonus included; 1.0 for greedy)
  efficiency     per prompt: speedup vs our greedy / that prompt's tau, the share of the ideal
                 speedup the row realises (about 1 / the cost of a step relative to a greedy
                 step); the row: median over prompts. (The row's median speedup over its
                 pooled tau would mix two statistics and can exceed that bound.)
  forwards/token target (and draft) forwards per generated token
  tokens/target forward  tokens scored per target forward: the compute budget actually spent
  target share   (rows whose method counts DecodeStats.target_emitted: model switching, EAD) the
                 share of generated tokens the target itself chose, pooled over the row's
                 generations; the draft model chose the rest, unchecked (None for other rows)
  peak memory    the highest peak over the row's generations (MiB)
  exact match    share of prompts whose output equals the reference (Row.exact_ref: our greedy;
                 transformers greedy for its peers; our greedy on llama.cpp for rows run there,
                 llama.cpp's greedy for its prompt lookup) for every row
                 that claims greedy equality. Below 1.0 the row FAILS (status and table say so), as
                 it does when a repeat's output differs from the first repeat's.
  quality        perplexity of the generated tokens under the target, or task accuracy, and the
                 delta to our greedy
  text quality   (text_quality; every causal row, shown for the rows whose output may differ from
                 greedy) distinct-1/2/3 within each output (mean over prompts), repeated-4-gram
                 rate (rep-4, mean over prompts), for several-output methods (beam, diverse_beam,
                 superposed) distinct-1/2/3 across each prompt's returned sequences (pooled over
                 them, mean over prompts), and the mean surprise in bits: the perplexity's own
                 teacher-forced NLL, token-weighted, over ln 2 (= log2 of the perplexity)

Diffusion rows (units whose reference is llada, one token per step; diffusion_summary):
  nfe            forward passes per generation (mean); nfe_reduction = llada's / the row's
  tokens/forward positions unmasked per forward pass
  forwarded      tokens forwarded per forward pass (a cached step forwards fewer; a FreeDave
                 verification forwards several canvases)
  speedup        per-prompt tokens/s ratio to llada, median [IQR] (and on CPU time)
  exact match    against one-token-per-step llada, for every row; a lossless row (freedave) must
                 match llada at its own steps and blocks exactly, or FAILS
  quality        task accuracy (per task too), or on code the token agreement with llada; delta
                 to llada
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from ..core.diversity import distinct_n, mean, repetition
from ..registry import get
from .rows import FIXED, Row

NGRAMS = (1, 2, 3)  # distinct-n orders reported
REP_N = 4  # repeated n-gram rate order


def quantile(xs: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), 0 <= q <= 1."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def spread(xs: list[float]) -> dict | None:
    """median, interquartile range and extremes of xs (None when empty)."""
    if not xs:
        return None
    return {"median": statistics.median(xs), "q25": quantile(xs, 0.25), "q75": quantile(xs, 0.75), "n": len(xs),
            "min": min(xs), "max": max(xs)}


def per_prompt_times(records: list[dict], row: str, clock: str = "seconds") -> dict[int, tuple[int, float]]:
    """prompt -> (new tokens, median seconds over that prompt's repeats) (clock: "seconds" wall,
    "cpu_seconds" process CPU time); prompts timed at 0 are left out."""
    secs, toks = defaultdict(list), {}
    for r in records:
        if r["row"] == row and clock in r:
            secs[r["prompt"]].append(r[clock])
            toks[r["prompt"]] = r["new_tokens"]
    return {p: (toks[p], statistics.median(s)) for p, s in secs.items() if statistics.median(s) > 0}


def per_prompt_tps(records: list[dict], row: str, clock: str = "seconds") -> dict[int, float]:
    """prompt -> new tokens / median seconds over that prompt's repeats."""
    return {p: n / t for p, (n, t) in per_prompt_times(records, row, clock).items()}


def pooled_speedup(records: list[dict], row: str, ref: str) -> float | None:
    """Total new tokens / total seconds of the row over the ref's, on the prompts both completed
    (each prompt's median seconds over repeats); None without such prompts."""
    a, b = per_prompt_times(records, row), per_prompt_times(records, ref)
    both = [p for p in a if p in b]
    if not both:
        return None
    rate = sum(a[p][0] for p in both) / sum(a[p][1] for p in both)
    return rate / (sum(b[p][0] for p in both) / sum(b[p][1] for p in both))


def speedups(records: list[dict], row: str, ref: str, clock: str = "seconds") -> list[float]:
    """Per-prompt tokens/s ratios row / ref, over the prompts both completed."""
    a, b = per_prompt_tps(records, row, clock), per_prompt_tps(records, ref, clock)
    return [a[p] / b[p] for p in sorted(a) if p in b and b[p] > 0]


def efficiencies(records: list[dict], row: str) -> list[float]:
    """Per prompt: speedup vs our greedy / the prompt's tau (committed tokens per step over its
    repeats)."""
    a, b = per_prompt_tps(records, row), per_prompt_tps(records, "greedy")
    tot, steps = defaultdict(int), defaultdict(int)
    for r in records:
        if r["row"] == row:
            tot[r["prompt"]] += r["committed_total"]
            steps[r["prompt"]] += r["committed_steps"]
    return [a[p] / b[p] * steps[p] / tot[p] for p in sorted(a) if b.get(p) and tot[p] and steps[p]]


def exact_match(outputs: dict[str, list[list[int]]], row: str, ref: str) -> dict | None:
    if row not in outputs or ref not in outputs:
        return None
    pairs = list(zip(outputs[row], outputs[ref]))
    if not pairs:
        return None
    same = sum(a == b for a, b in pairs)
    return {"rate": same / len(pairs), "matched": same, "prompts": len(pairs),
            "first_mismatch": next((i for i, (a, b) in enumerate(pairs) if a != b), None)}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def row_summary(unit_result: dict, row: Row) -> dict:
    """The figures of one row, from the unit result (run_unit's dict) that measured it."""
    recs = [r for r in unit_result["records"] if r["row"] == row.label]
    unit = unit_result["unit"]
    out = {"row": row.label, "method": row.method, "peer": row.peer, "options": dict(row.options),
           "model": unit["model"], "draft": unit["draft"], "workload": unit["workload"], "unit": unit["uid"],
           "generations": len(recs), "prompts": len({r["prompt"] for r in recs}),
           "error": unit_result["errors"].get(row.label), "partial": unit_result["partial"]}
    tps = per_prompt_tps(unit_result["records"], row.label)
    out["tokens_per_s"] = spread(list(tps.values()))
    for key, ref in (("speedup_vs_greedy", "greedy"), ("speedup_vs_hf_greedy", "hf:greedy"),
                     ("speedup_vs_llamacpp_greedy", "llamacpp:greedy")):
        out[key] = spread(speedups(unit_result["records"], row.label, ref))
    out["cpu_speedup_vs_greedy"] = spread(speedups(unit_result["records"], row.label, "greedy", "cpu_seconds"))
    out["pooled_speedup_vs_greedy"] = pooled_speedup(unit_result["records"], row.label, "greedy")
    peer = peer_label(row, {r["label"] for r in unit["rows"]})
    out["peer_row"] = peer
    out["speedup_vs_peer"] = spread(speedups(unit_result["records"], row.label, peer)) if peer else None
    tot = {k: sum(r[k] for r in recs) for k in ("new_tokens", "target_forwards", "target_tokens_scored",
                                                  "draft_forwards", "draft_tokens_scored", "committed_total",
                                                  "committed_steps")}
    out["new_tokens"] = tot["new_tokens"]
    out["tau"] = _ratio(tot["committed_total"], tot["committed_steps"])
    effs = efficiencies(unit_result["records"], row.label)
    out["efficiency"] = statistics.median(effs) if effs else None
    out["target_forwards_per_token"] = _ratio(tot["target_forwards"], tot["new_tokens"])
    out["draft_forwards_per_token"] = _ratio(tot["draft_forwards"], tot["new_tokens"])
    out["tokens_per_target_forward"] = _ratio(tot["target_tokens_scored"], tot["target_forwards"])
    out["target_share"] = target_share(recs)
    mems = [r["peak_mem_mb"] for r in recs if r.get("peak_mem_mb") is not None]
    out["peak_mem_mb"] = max(mems) if mems else None
    ref = row.exact_ref()  # the output the row claims to reproduce (rows.Row.exact_ref)
    out["exact_match_ref"] = ref
    out["claims_greedy_equality"] = row.claims_greedy_equality()
    out["exact_match"] = exact_match(unit_result["outputs"], row.label, ref) if ref else None
    out["unstable_repeats"] = unit_result.get("unstable", {}).get(row.label, 0)
    out.update(_quality(unit_result, row.label))
    out.update(text_quality(unit_result, row.label))
    out["status"] = _status(out)
    return out


def target_share(recs: list[dict]) -> float | None:
    """Tokens the target chose / generated tokens, over the records that count them (None if none do)."""
    counted = [r for r in recs if r.get("target_emitted") is not None]
    return _ratio(sum(r["target_emitted"] for r in counted), sum(r["new_tokens"] for r in counted))


def text_quality(unit_result: dict, label: str) -> dict:
    """Diversity and surprise of a row's outputs (see the module docstring): distinct_N and
    distinct_across_N for N in NGRAMS, repetition_4, sequences_per_prompt, surprise_bits; None
    where there is nothing to measure."""
    outs = unit_result["outputs"].get(label) or []
    seqs = (unit_result.get("sequences") or {}).get(label)
    out = {f"distinct_{n}": mean(distinct_n([o], n) for o in outs) for n in NGRAMS}
    out.update({f"distinct_across_{n}": mean(distinct_n(s, n) for s in seqs) if seqs else None for n in NGRAMS})
    out["sequences_per_prompt"] = statistics.mean(len(s) for s in seqs) if seqs else (1 if outs else None)
    out[f"repetition_{REP_N}"] = mean(repetition(o, REP_N) for o in outs)
    nll = mean_nll(unit_result.get("quality", {}).get(label) or [], [len(o) for o in outs]) \
        if unit_result.get("quality_kind") == "perplexity" else None
    out["surprise_bits"] = None if nll is None else nll / math.log(2)
    return out


def peer_label(row: Row, labels: set[str]) -> str | None:
    """The transformers row to compare `row` with (the peer its method declares): the peer at the
    same fixed budget when there is one, else the peer at its defaults."""
    if row.peer:
        return None
    base = get(row.method).peer
    if base is None:
        return None
    if row.backend == "llamacpp":  # on llama.cpp: llama.cpp's own row doing the same job, where it has one
        base = {"hf:greedy": "llamacpp:greedy", "hf:prompt-lookup": "llamacpp:prompt-lookup"}.get(base, base)
    budget = row.kwargs.get(FIXED)
    if budget is not None and f"{base}:{FIXED}={budget}" in labels:
        return f"{base}:{FIXED}={budget}"
    return base if base in labels else None


def _quality(unit_result: dict, label: str, ref: str = "greedy") -> dict:
    kind = unit_result.get("quality_kind")
    q = unit_result.get("quality", {})

    def value(lbl):
        scores = q.get(lbl)
        if not scores:
            return None
        if kind in ("accuracy", "agreement", "satisfied"):
            kept = [x for x in scores if x is not None]
            return sum(kept) / len(kept) if kept else None
        lens = [len(o) for o in unit_result["outputs"].get(lbl, [])]
        return perplexity(scores, lens)

    mine, base = value(label), value(ref)
    return {"quality_kind": kind, "quality": mine,
            "quality_delta": None if mine is None or base is None else mine - base}


def mean_nll(nll_sums: list[float | None], new_tokens: list[int]) -> float | None:
    """Total NLL / total tokens (nats per token) over the prompts that have both."""
    pairs = [(s, n) for s, n in zip(nll_sums, new_tokens) if s is not None and n]
    if not pairs:
        return None
    return sum(s for s, _ in pairs) / sum(n for _, n in pairs)


def perplexity(nll_sums: list[float | None], new_tokens: list[int]) -> float | None:
    """exp(total NLL / total tokens) over the prompts that have both."""
    nll = mean_nll(nll_sums, new_tokens)
    return None if nll is None else math.exp(nll)


def _status(row: dict) -> str:
    if row["error"]:
        return "FAIL: error"
    em = row["exact_match"]
    if row["claims_greedy_equality"] and row["unstable_repeats"]:
        return f"FAIL: output changed between repeats ({row['unstable_repeats']} generations)"
    if row["claims_greedy_equality"] and em is not None and em["rate"] < 1.0:
        differ = em["prompts"] - em["matched"]
        return f"FAIL: output differs from {row['exact_match_ref']} on {differ}/{em['prompts']} prompts"
    return "partial" if row["partial"] else "ok"


def summarize(unit_results: list[dict]) -> list[dict]:
    """One summary per (model, workload, row), each from the unit that lists the row as main."""
    rows = []
    for res in unit_results:
        by_label = {r["label"]: Row.from_dict(r) for r in res["unit"]["rows"]}
        summary = diffusion_summary if res["unit"].get("reference") == "llada" else row_summary
        for label in res["unit"]["main"]:
            rows.append(summary(res, by_label[label]))
    return rows


def diffusion_summary(unit_result: dict, row: Row) -> dict:
    """The figures of a diffusion row (see the module docstring), from the unit that measured it."""
    recs = [r for r in unit_result["records"] if r["row"] == row.label]
    unit, ref = unit_result["unit"], "llada"
    out = {"row": row.label, "method": row.method, "peer": False, "diffusion": True, "options": dict(row.options),
           "model": unit["model"], "draft": None, "workload": unit["workload"], "unit": unit["uid"],
           "generations": len(recs), "prompts": len({r["prompt"] for r in recs}),
           "error": unit_result["errors"].get(row.label), "partial": unit_result["partial"], "reference": ref}
    out["tokens_per_s"] = spread(list(per_prompt_tps(unit_result["records"], row.label).values()))
    out["speedup_vs_reference"] = spread(speedups(unit_result["records"], row.label, ref))
    out["cpu_speedup_vs_reference"] = spread(speedups(unit_result["records"], row.label, ref, "cpu_seconds"))
    tot = {k: sum(r.get(k, 0) for r in recs) for k in ("new_tokens", "target_forwards", "unmasked_total",
                                                         "forwarded_tokens")}
    out["new_tokens"] = tot["new_tokens"]
    out["nfe"] = _ratio(tot["target_forwards"], len(recs))
    ref_recs = [r for r in unit_result["records"] if r["row"] == ref]
    ref_nfe = _ratio(sum(r["target_forwards"] for r in ref_recs), len(ref_recs))
    out["nfe_reduction"] = _ratio(ref_nfe, out["nfe"]) if out["nfe"] and ref_nfe else None
    out["tokens_per_forward"] = _ratio(tot["unmasked_total"], tot["target_forwards"])
    out["forwarded_per_forward"] = _ratio(tot["forwarded_tokens"], tot["target_forwards"])
    mems = [r["peak_mem_mb"] for r in recs if r.get("peak_mem_mb") is not None]
    out["peak_mem_mb"] = max(mems) if mems else None
    out["claims_greedy_equality"] = row.claims_greedy_equality()
    out["exact_match_ref"] = row.reference()
    out["exact_match"] = exact_match(unit_result["outputs"], row.label, row.reference()) \
        if row.label != row.reference() else None
    out["exact_match_1step"] = exact_match(unit_result["outputs"], row.label, ref) if row.label != ref else None
    out["unstable_repeats"] = unit_result.get("unstable", {}).get(row.label, 0)
    out.update(_quality(unit_result, row.label, ref))
    out["by_task"] = by_task(unit_result, row.label)
    out["status"] = _status(out)
    return out


def by_task(unit_result: dict, label: str) -> dict[str, dict] | None:
    """task -> {accuracy, nfe (mean forwards per generation), prompts} for task workloads."""
    tasks, scores = unit_result.get("tasks") or [], unit_result.get("quality", {}).get(label)
    if not tasks or not scores or unit_result.get("quality_kind") != "accuracy":
        return None
    fwd = defaultdict(list)
    for r in unit_result["records"]:
        if r["row"] == label:
            fwd[tasks[r["prompt"]]].append(r["target_forwards"])
    out = {}
    for t in dict.fromkeys(tasks):
        idx = [i for i, x in enumerate(tasks) if x == t and i < len(scores)]
        out[t] = {"accuracy": sum(scores[i] for i in idx) / len(idx) if idx else None,
                  "nfe": statistics.mean(fwd[t]) if fwd[t] else None, "prompts": len(idx)}
    return out
