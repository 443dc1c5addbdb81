"""Results JSON in, markdown out. `decodelab bench report RESULTS.json` re-renders from the JSON."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..errors import DecodeLabError

COLUMNS = ("row", "tok/s [IQR]", "x greedy [IQR]", "x greedy pooled", "x greedy CPU", "x HF greedy", "tau", "eff",
           "tgt fwd/tok", "drf fwd/tok", "tok/tgt fwd", "peak MiB", "exact match", "quality (Δ)", "status")


def save(results: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")  # never a half-written results file
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)
    return path


def load(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DecodeLabError(f"results file '{path}' not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DecodeLabError(f"'{path}' is not a bench results JSON: {e}") from None
    if not isinstance(data, dict) or "rows" not in data or "units" not in data:
        raise DecodeLabError(f"'{path}' is not a bench results JSON (no rows/units)")
    return data


def _num(x, fmt="{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _spread(s, fmt="{:.2f}") -> str:
    if not s:
        return "n/a"
    return f"{fmt.format(s['median'])} [{fmt.format(s['q25'])}-{fmt.format(s['q75'])}]"


def _range(s) -> str:
    """", lo-hi": the extremes over prompts (results written before they were kept: nothing)."""
    return f", {s['min']:.2f}-{s['max']:.2f}" if s and s.get("min") is not None else ""


def _exact(row: dict) -> str:
    em = row.get("exact_match")
    if row.get("exact_match_ref") is None and row["row"] == "greedy":
        return "(reference)"
    if em is None or not row.get("claims_greedy_equality"):
        return "-" if em is None else f"{em['rate']:.0%} (not claimed)"
    text = f"{em['rate']:.0%}"
    return text if em["rate"] >= 1.0 else f"**{text} FAIL**"


def _quality(row: dict) -> str:
    q = row.get("quality")
    if q is None:
        return "n/a"
    kind = {"accuracy": "acc", "agreement": "agr", "satisfied": "sat"}.get(row.get("quality_kind"), "ppl")
    fmt = "{:.1%}" if kind != "ppl" else "{:.3f}"
    delta = row.get("quality_delta")
    d = "" if delta is None or row["row"] in ("greedy", "llada") else f" ({'+' if delta >= 0 else ''}{fmt.format(delta)})"
    return f"{kind} {fmt.format(q)}{d}"


def _share(row: dict) -> str:
    """The target's share of the generated tokens: counted by model-switching rows, 100% for our
    greedy and the rows that reproduce it, "-" where nothing counted it."""
    if row.get("target_share") is not None:
        return f"{row['target_share']:.0%}"
    return "100%" if row["row"] == "greedy" or row.get("claims_greedy_equality") else "-"


def _status(row: dict) -> str:
    s = row["status"]
    if s.startswith("FAIL"):
        return f"**{s}**" + (f": {row['error']}" if row.get("error") else "")
    return s


def markdown(results: dict) -> str:
    """The human report: a header with machine and settings, then one table per (model, workload)."""
    m, s = results["machine"], results["settings"]
    lines = ["# decodelab bench", ""]
    if results.get("partial"):
        lines += ["> **PARTIAL RESULTS: the run was interrupted; figures cover only what was measured.**", ""]
    fails = [r for r in results["rows"] if r["status"].startswith("FAIL")]
    for r in fails:
        lines.append(f"> **FAILURE: {r['row']} on {r['workload']} ({r['model']}): {r['status']}"
                     + (f" ({r['error']})" if r.get("error") else "") + "**")
    if fails:
        lines.append("")
    threads = sorted({u.get("torch_threads") for u in results["units"]} - {None})
    lines += [f"- machine: {m.get('processor')} ({m.get('cpus')} CPUs, torch threads {', '.join(map(str, threads))})"
              + (f", {m['cuda_device']}" if m.get("cuda_device") else "") + f"; {m.get('platform')}",
              f"- versions: python {m.get('python')}, torch {m.get('torch')}, transformers {m.get('transformers')}, "
              f"decodelab {m.get('decodelab')}",
              f"- settings: repeats {s['repeats']}, warm-up {s['warmup']}, seed {s['seed']}, limit {s['limit']}, "
              f"ignore_eos {s['ignore_eos']}, device {s['device']}, executor {s.get('executor')}",
              f"- created {results.get('created')}", ""]
    by_cell: dict[tuple, list[dict]] = {}
    for r in results["rows"]:
        by_cell.setdefault((r["model"], r["draft"], r["workload"]), []).append(r)
    # a run with sampling or search rows shows every causal cell's text quality, its greedy at least
    texts = any(text_rows(rows) for rows in by_cell.values() if not rows[0].get("diffusion"))
    units = {u["unit"]["uid"]: u for u in results["units"]}
    for (model, draft, wl), rows in by_cell.items():
        u = units.get(rows[0]["unit"], {})
        if rows[0].get("diffusion"):
            lines += diffusion_section(model, wl, rows, u)
            continue
        lines += [f"## {wl} on {model}" + (f" (draft {draft})" if draft else ""), "",
                  f"{len(u.get('prompts', []))} prompts, {u.get('max_new_tokens')} new tokens each"
                  + (f", {u['truncated_prompts']} prompts cut from the left to fit the context"
                     if u.get("truncated_prompts") else ""), ""]
        llama = any(r.get("speedup_vs_llamacpp_greedy") for r in rows)  # a run with llama.cpp's greedy
        share = any(r.get("target_share") is not None for r in rows)  # a cell with model-switching rows
        cols = COLUMNS[:6] + (("x llama.cpp greedy",) if llama else ()) + COLUMNS[6:11] + \
            (("tgt share",) if share else ()) + COLUMNS[11:]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            cells = [r["row"], _spread(r["tokens_per_s"], "{:.1f}"), _spread(r["speedup_vs_greedy"]),
                     _num(r.get("pooled_speedup_vs_greedy")),
                     _num((r.get("cpu_speedup_vs_greedy") or {}).get("median")),
                     _num((r["speedup_vs_hf_greedy"] or {}).get("median"))]
            cells += [_num((r.get("speedup_vs_llamacpp_greedy") or {}).get("median"))] if llama else []
            cells += [_num(r["tau"]), _num(r["efficiency"]),
                     _num(r["target_forwards_per_token"], "{:.3f}"), _num(r["draft_forwards_per_token"], "{:.3f}"),
                     _num(r["tokens_per_target_forward"])]
            cells += [_share(r)] if share else []
            cells += [_num(r["peak_mem_mb"], "{:.0f}"), _exact(r), _quality(r), _status(r)]
            lines.append("| " + " | ".join(cells) + " |")
        pairs = [f"{r['row']} / {r['peer_row']} = {_spread(r['speedup_vs_peer'])}{_range(r['speedup_vs_peer'])}"
                 for r in rows if r.get("speedup_vs_peer")]
        lines += ["", "vs the peer doing the same job (per-prompt speed ratio, median [IQR], range): "
                  + "; ".join(pairs)] if pairs else []
        said = answer(rows)
        lines += ["", *said] if said else []
        lines.append("")
        lines += text_section(rows, also_greedy=texts)
    if all(r.get("diffusion") for r in results["rows"]):  # the legend below is for causal tables
        return "\n".join(lines)
    lines += ["tok/s: median over prompts [interquartile range]; x greedy / x HF greedy: per-prompt speed ratio to "
              "our greedy / transformers greedy measured in the same run (median [IQR]); x greedy pooled: the "
              "workload's total tokens / total time over our greedy's (weighs each prompt by its time); "
              "x greedy CPU: the per-prompt ratio on process CPU time (not inflated by waiting for a busy machine's "
              "cores); tau: tokens "
              "committed per target forward; eff: speedup / tau per prompt (median); tok/tgt fwd: tokens scored per target forward "
              "(compute budget); tgt share (cells with model-switching rows): share of the generated tokens the target "
              "itself chose (the draft chose the rest, unchecked); "
              "x llama.cpp greedy: the same ratio to llama-cpp-python's greedy (llamacpp:greedy), where the run has it; "
              "exact match: share of prompts equal to greedy (ours and transformers greedy vs our greedy, the other "
              "transformers peers vs transformers greedy, rows on llama.cpp vs our greedy there, which is compared "
              "with our greedy, llama.cpp's and CTranslate2's greedy vs our greedy, llama.cpp's prompt lookup vs "
              "its greedy); "
              "quality: perplexity of the generated tokens under the target (ppl), task accuracy (acc) or the share "
              "of outputs satisfying the workload's checker (sat), Δ vs our greedy; fastest here: the rows with the "
              "highest median x greedy among those whose output was our greedy's on every prompt (exact against "
              "their reference row, down to our greedy) and among those with another output.", ""]
    from . import compute

    return "\n".join(lines + compute.markdown(results))


def _speed(row: dict) -> float:
    return (row.get("speedup_vs_greedy") or {}).get("median") or 0.0


def _keeps_greedy(row: dict, by_name: dict) -> bool:
    """Whether the row's output was our greedy's on every prompt: exact against its reference row,
    and that row against its own, down to our greedy."""
    seen = set()
    while row["row"] != "greedy":
        em = row.get("exact_match")
        if not row.get("claims_greedy_equality") or em is None or em["rate"] < 1.0 or row["row"] in seen:
            return False
        seen.add(row["row"])
        row = by_name.get(row.get("exact_match_ref"))
        if row is None:
            return False
    return True


def answer(rows: list[dict]) -> list[str]:
    """The cell's answer to the bench's question: the fastest rows whose output is our greedy's on
    every prompt, and the fastest whose output is not, with its quality."""
    by_name = {r["row"]: r for r in rows}
    ok = [r for r in rows if r["status"] == "ok" and _speed(r)]
    keeps = {r["row"]: _keeps_greedy(r, by_name) for r in ok}
    same = sorted((r for r in ok if keeps[r["row"]]), key=_speed, reverse=True)
    other = sorted((r for r in ok if not keeps[r["row"]] and r.get("quality") is not None), key=_speed, reverse=True)
    if not same and not other:
        return []

    def speed(r, spread: bool = True):
        """Its median ratio to our greedy, with (spread) the IQR, and to llama.cpp's greedy; with
        (spread) its slowest prompt against llama.cpp's greedy where the run has it, else ours."""
        s, llama = r["speedup_vs_greedy"], r.get("speedup_vs_llamacpp_greedy") or {}
        vs_llama = llama.get("median") is not None and r["row"] != "llamacpp:greedy"
        notes = [f"IQR {s['q25']:.2f}-{s['q75']:.2f}"] if spread and s.get("q25") is not None else []
        ref = llama if vs_llama else {} if r["row"] == "greedy" else s  # greedy against itself says nothing
        slowest = f"{ref['min']:.2f}x on its slowest prompt" if spread and ref.get("min") is not None else None
        if vs_llama:
            notes.append(f"{llama['median']:.2f}x llama.cpp's greedy" + (f", {slowest}" if slowest else ""))
        elif slowest:
            notes.append(slowest)
        return f"{s['median']:.2f}x our greedy" + (f" ({'; '.join(notes)})" if notes else "")

    text = "**Fastest here**"
    if same:
        text += f" with our greedy's output on every prompt: `{same[0]['row']}` at {speed(same[0])}"
        text += f", then `{same[1]['row']}` at {speed(same[1], False)}." if len(same) > 1 else "."
    if other:
        text += (" With" if same else " with") + f" another output: `{other[0]['row']}` at {speed(other[0])}, " \
            f"{_quality(other[0])}."
    return [text]


TEXT_COLUMNS = ("row", "x greedy [IQR]", "ppl", "surprise (bits)", "distinct-1/2/3", "across k: distinct-1/2/3 (k)",
                "rep-4")


def text_rows(rows: list[dict], also_greedy: bool = False) -> list[dict]:
    """The rows of a causal cell whose output may differ from greedy (sampling, search, lossy),
    with our greedy as the reference point; empty when the cell has none (also_greedy: its greedy
    row alone then, for a run where other cells have such rows)."""
    lossy = [r for r in rows if not r.get("claims_greedy_equality") and not r.get("peer") and r["row"] != "greedy"]
    return [r for r in rows if r["row"] == "greedy"] + lossy if lossy or also_greedy else []


def text_section(rows: list[dict], also_greedy: bool = False) -> list[str]:
    """The text-quality table of a causal cell (metrics.text_quality's figures)."""
    picked = text_rows(rows, also_greedy)
    if not picked:
        return []

    def triple(r, key):
        vals = [r.get(f"{key}_{n}") for n in (1, 2, 3)]
        return "-" if all(v is None for v in vals) else " / ".join(_num(v) for v in vals)

    lines = ["Text quality of greedy and of the rows whose output may differ from it:", "",
             "| " + " | ".join(TEXT_COLUMNS) + " |", "|" + "---|" * len(TEXT_COLUMNS)]
    for r in picked:
        ppl = r.get("quality") if r.get("quality_kind") == "perplexity" else None
        across = triple(r, "distinct_across")
        k = r.get("sequences_per_prompt")
        cells = [r["row"], _spread(r.get("speedup_vs_greedy")), _num(ppl, "{:.3f}"), _num(r.get("surprise_bits")),
                 triple(r, "distinct"), across + (f" ({k:g})" if across != "-" and k else ""),
                 _num(r.get("repetition_4"), "{:.3f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", "ppl: perplexity of the generated tokens under the target (teacher-forced, its raw "
                    "distribution); surprise: their mean -log2 p (bits, log2 of ppl); distinct-n: distinct n-grams / "
                    "n-grams within each output, mean over prompts; across k: the same pooled over the k sequences a "
                    "several-output method returns per prompt; rep-4: share of each output's 4-grams that occurred "
                    "earlier in it, mean over prompts. Several-output rows: ppl, surprise, distinct and rep-4 of the "
                    "best sequence (the one generate() returns as tokens).", ""]


def render(results: dict, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write results.md (and the PNG plots) next to results.json; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "results.md"
    md.write_text(markdown(results))
    paths = [md]
    if plots:
        from . import plots as plots_mod

        paths += plots_mod.render(results, out)
    return paths


DIFFUSION_COLUMNS = ("row", "quality (Δ)", "NFE", "NFE ÷", "tok/fwd", "fwd tok/fwd", "tok/s [IQR]", "x llada [IQR]",
                     "x llada CPU", "exact match", "= 1-step", "status")


def diffusion_section(model: str, wl: str, rows: list[dict], unit: dict) -> list[str]:
    """A diffusion cell: the rows against one-token-per-step llada, accuracy per task, and the
    ParallelBench-style table (accuracy as the tokens unmasked per step grow)."""
    lines = [f"## {wl} on {model} (masked diffusion)", "",
             f"{len(unit.get('prompts', []))} prompts, a {unit.get('max_new_tokens')}-token canvas each; reference: "
             "llada, one position per step", "",
             "| " + " | ".join(DIFFUSION_COLUMNS) + " |", "|" + "---|" * len(DIFFUSION_COLUMNS)]
    for r in rows:
        one = r.get("exact_match_1step")
        cells = [r["row"], _quality(r), _num(r["nfe"], "{:.1f}"), _num(r["nfe_reduction"], "{:.2f}x"),
                 _num(r["tokens_per_forward"]), _num(r["forwarded_per_forward"], "{:.0f}"),
                 _spread(r["tokens_per_s"], "{:.0f}"), _spread(r["speedup_vs_reference"]),
                 _num((r.get("cpu_speedup_vs_reference") or {}).get("median")), _exact(r),
                 "(reference)" if r["row"] == "llada" else "-" if one is None else f"{one['rate']:.0%}", _status(r)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + task_table(rows) + parallel_table(rows, unit.get("max_new_tokens")) + [
        "NFE: forward passes per generation; NFE ÷: llada's NFE / the row's; tok/fwd: positions unmasked per "
        "forward; fwd tok/fwd: tokens forwarded per forward (a cached step forwards fewer, a FreeDave "
        "verification several canvases); x llada: per-prompt speed ratio to one-token-per-step llada in the "
        "same run (median [IQR]); exact match: against the output the row claims (lossless rows: llada at "
        "their steps and blocks) or, not claimed, llada; = 1-step: share of prompts equal to llada one "
        "position per step; quality: task accuracy (acc) or token agreement with llada (agr), Δ vs llada.", ""]
    return lines


def task_table(rows: list[dict]) -> list[str]:
    """Accuracy per task and row (task workloads)."""
    tasks = next((list(r["by_task"]) for r in rows if r.get("by_task")), [])
    if not tasks:
        return []
    out = ["Accuracy per task (NFE per generation in brackets):", "",
           "| row | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for r in rows:
        bt = r.get("by_task") or {}
        out.append(f"| {r['row']} | " + " | ".join(
            f"{_num((bt.get(t) or {}).get('accuracy'), '{:.2f}')} ({_num((bt.get(t) or {}).get('nfe'), '{:.1f}')})"
            for t in tasks) + " |")
    return out + [""]


def parallel_table(rows: list[dict], gen_length: int | None) -> list[str]:
    """ParallelBench-style: llada's accuracy per task at a fixed number of positions unmasked per
    step (gen_length / steps; llada without `steps` is 1), showing where parallel decoding breaks."""
    fixed = {}
    for r in rows:
        opts = r.get("options", {})
        if r["method"] == "llada" and r.get("by_task") and set(opts) <= {"steps"} and gen_length:
            steps = opts.get("steps", gen_length)
            if gen_length % steps == 0:
                fixed[gen_length // steps] = r["by_task"]
    if len(fixed) < 2:
        return []
    ks = sorted(fixed)
    tasks = list(fixed[ks[0]])
    out = ["ParallelBench-style: llada accuracy per task as the positions unmasked per step grow:", "",
           "| task | " + " | ".join(f"{k}/step" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for t in tasks:
        out.append(f"| {t} | " + " | ".join(_num((fixed[k].get(t) or {}).get("accuracy"), "{:.2f}") for k in ks) + " |")
    mean = [statistics.mean(v["accuracy"] for v in fixed[k].values() if v["accuracy"] is not None) for k in ks]
    return out + ["| mean | " + " | ".join(f"{m:.2f}" for m in mean) + " |", ""]
