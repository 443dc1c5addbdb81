"""Quality against compute: for every cell whose quality is a rate (task accuracy, or the share of
outputs that satisfy the workload's checker), each row's quality next to what it cost per
problem, and a plot with every row as a point.

Search methods (astar, deal, cntp, ffs, best_of_n) spend compute in width: their trials share
batched forwards, so target forwards and target tokens scored tell different stories; both are
reported, per problem (mean over prompts and repeats; the one prefill forward of every row
apart, as everywhere in the bench). `gain per 100 tok`: the quality gained over our greedy per
100 extra target tokens scored per problem, in points (n/a when the row scores less than one token
per problem more than greedy: plain sampling's length noise is no compute spent, and dividing by
it gave -75000 points on tasks:arithmetic).
Transformers peer rows are left out: they repeat our greedy here. Diffusion cells are too: the
diffusion report plots their quality against NFE.
"""
from __future__ import annotations

import statistics
from pathlib import Path

RATES = ("accuracy", "satisfied")
MIN_EXTRA = 1.0  # extra target tokens scored per problem below which a row spent no compute on quality
COLUMNS = ("row", "quality", "Δ vs greedy", "tgt tok scored / problem", "tgt fwd / problem", "new tok / problem",
           "gain / 100 tok")


def entries(unit_result: dict) -> list[dict]:
    """Per main row of a unit with a rate quality: quality and per-problem compute. Diffusion cells
    (their reference is llada, not greedy) have their own quality-against-NFE plot."""
    if unit_result.get("quality_kind") not in RATES or unit_result["unit"].get("reference", "greedy") != "greedy":
        return []
    out = []
    for label in unit_result["unit"]["main"]:
        recs = [r for r in unit_result["records"] if r["row"] == label]
        scores = [s for s in unit_result.get("quality", {}).get(label) or [] if s is not None]
        if label.startswith("hf:") or not recs or not scores:
            continue
        out.append({"row": label, "quality": statistics.mean(scores),
                    "scored": statistics.mean(r["target_tokens_scored"] for r in recs),
                    "forwards": statistics.mean(r["target_forwards"] for r in recs),
                    "new": statistics.mean(r["new_tokens"] for r in recs)})
    ref = next((e for e in out if e["row"] == "greedy"), None)
    for e in out:
        extra = e["scored"] - ref["scored"] if ref else 0
        e["delta"] = e["quality"] - ref["quality"] if ref else None
        e["gain_per_100"] = 100 * e["delta"] / extra if ref and extra >= MIN_EXTRA else None
    return out


def cells(results: dict) -> dict[tuple[str, str, str], list[dict]]:
    """(model, workload, quality kind) -> entries, over the units of a results document."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    for u in results.get("units", []):
        es = entries(u)
        if es:
            out.setdefault((u["unit"]["model"], u["unit"]["workload"], u["quality_kind"]), []).extend(es)
    return out


def markdown(results: dict) -> list[str]:
    """The quality-against-compute tables, one per cell (empty when no cell has a rate quality)."""
    lines = []
    for (model, wl, kind), es in cells(results).items():
        lines += [f"## Quality against compute: {wl} on {model}", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for e in es:
            d = "" if e["delta"] is None else f"{100 * e['delta']:+.1f} pts"
            g = "n/a" if e["gain_per_100"] is None else f"{100 * e['gain_per_100']:+.1f} pts"
            lines.append(f"| {e['row']} | {'acc' if kind == 'accuracy' else 'sat'} {e['quality']:.1%} | {d} | "
                         f"{e['scored']:.1f} | {e['forwards']:.1f} | {e['new']:.1f} | {g} |")
        lines += ["", "quality: task accuracy (acc) or share of outputs satisfying the workload's checker (sat); "
                  "per problem: means over prompts and repeats, prefill apart; gain / 100 tok: quality points "
                  "gained over greedy per 100 extra target tokens scored per problem.", ""]
    return lines


def plot(results: dict, out: Path) -> list[Path]:
    """compute.png (compute-1.png, ... for further cells): quality against target tokens scored and
    against target forwards per problem, one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FuncFormatter, NullFormatter

    paths = []
    for n, ((model, wl, kind), es) in enumerate(cells(results).items()):
        legend_h = 0.2 + 0.2 * ((len(es) + 1) // 2)  # inches under the axes for a two-column legend
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2 + legend_h), sharey=True)
        for ax, key, name in ((axes[0], "scored", "target tokens scored per problem"),
                              (axes[1], "forwards", "target forwards per problem")):
            for i, e in enumerate(es):  # one colour and marker per row, named in the legend (labels overlap)
                ax.scatter(e[key], e["quality"], marker="*" if e["row"] == "greedy" else "os^DvP<>X"[i % 9], s=90,
                           label=e["row"], alpha=0.85)
            xs = [e[key] for e in es]
            log = min(xs) > 0 and max(xs) / min(xs) > 3
            if log:  # plain numbers on the ticks, none on the minor ones
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(name + (" (log)" if log else ""))
            ax.grid(alpha=0.3)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7, frameon=False)
        axes[0].set_ylabel("task accuracy" if kind == "accuracy" else "share satisfying the checker")
        fig.suptitle(f"quality against compute: {wl} on {model}" + (" [PARTIAL]" if results.get("partial") else ""),
                     fontsize=9)
        fig.tight_layout(rect=(0, legend_h / (4.2 + legend_h), 1, 1))
        p = out / ("compute.png" if n == 0 else f"compute-{n}.png")
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(p)
    return paths
