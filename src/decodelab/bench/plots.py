"""PNG plots: speedup bars with their interquartile range, and speed vs quality for the rows
whose output may differ from greedy (sampling, search and lossy rows), greedy as the reference
point (on perplexity cells a second panel: distinct-2, within each output and across the
sequences of several-output methods).
Diffusion cells: quality (accuracy per task, or agreement on code) against NFE, with the Pareto
front (the rows no other row beats on both)."""
from __future__ import annotations

from pathlib import Path


def _cells(results: dict) -> dict[tuple, list[dict]]:
    cells: dict[tuple, list[dict]] = {}
    for r in results["rows"]:
        cells.setdefault((r["model"], r["workload"]), []).append(r)
    return cells


def render(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for n, ((model, wl), rows) in enumerate(_cells(results).items()):
        tag = "" if n == 0 else f"-{n}"
        if rows[0].get("diffusion"):
            paths += pareto(plt, rows, f"{wl} on {model}", out / f"pareto{tag}.png")
            continue
        rows = [r for r in rows if r["speedup_vs_greedy"]]
        if rows:
            fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) + 2), 4))
            med = [r["speedup_vs_greedy"]["median"] for r in rows]
            err = [[m - r["speedup_vs_greedy"]["q25"] for m, r in zip(med, rows)],
                   [r["speedup_vs_greedy"]["q75"] - m for m, r in zip(med, rows)]]
            colors = ["tab:red" if r["status"].startswith("FAIL") else "tab:gray" if r["peer"] else "tab:blue"
                      for r in rows]
            ax.bar(range(len(rows)), med, yerr=err, capsize=4, color=colors)
            ax.axhline(1.0, color="black", lw=0.8, ls="--")
            ax.set_xticks(range(len(rows)), [r["row"] for r in rows], rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("speedup vs our greedy (median, IQR)")
            ax.set_title(f"{wl} on {model}" + (" [PARTIAL]" if results.get("partial") else ""), fontsize=9)
            fig.tight_layout()
            p = out / f"speedup{tag}.png"
            fig.savefig(p, dpi=120)
            plt.close(fig)
            paths.append(p)
        lossy = [r for r in rows if r["quality"] is not None and r["speedup_vs_greedy"]
                 and (not r["claims_greedy_equality"] or r["row"] == "greedy")]
        if len(lossy) > 1:
            p = out / f"quality{tag}.png"
            title = f"speed vs quality: {wl} on {model}" + (" [PARTIAL]" if results.get("partial") else "")
            speed_quality(plt, lossy, title, p)
            paths.append(p)
    from . import compute

    return paths + compute.plot(results, out)  # quality against compute, for the cells with a rate quality


def speed_quality(plt, rows: list[dict], title: str, path: Path) -> None:
    """Speed (tokens/s as a ratio to our greedy, median and IQR) against quality, one point per row
    (greedy a star). Perplexity cells get two panels: perplexity under the target, and distinct-2
    within each output (a several-output row adds a hollow point at its distinct-2 across the
    sequences, joined to its own); other cells one panel of their rate (accuracy, satisfied)."""
    kind = rows[0]["quality_kind"]
    panels = [("quality", {"accuracy": "task accuracy", "satisfied": "share satisfying the checker"}.get(
        kind, "perplexity under the target (lower is better)"))]
    if kind == "perplexity" and any(r.get("distinct_2") is not None for r in rows):
        panels.append(("distinct_2", "distinct-2 within each output (hollow: across the k returned)"))
    legend_h = 0.2 + 0.2 * ((len(rows) + 2) // 3)
    palette = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")  # a colour of its own per row
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2 + legend_h), sharey=True, squeeze=False)
    for ax, (key, name) in zip(axes[0], panels):
        for i, r in enumerate(rows):
            sp = r["speedup_vs_greedy"]
            y, err = sp["median"], [[sp["median"] - sp["q25"]], [sp["q75"] - sp["median"]]]
            colour, x, star = palette(i % palette.N), r.get(key), r["row"] == "greedy"
            if x is None:
                continue
            ax.errorbar(x, y, yerr=err, fmt="*" if star else "os^DvP<>X"[i % 9], ms=10 if star else 7, color=colour,
                        capsize=3, label=r["row"], alpha=0.9)
            across = r.get("distinct_across_2") if key == "distinct_2" else None
            if across is not None:
                ax.plot([x, across], [y, y], color=colour, lw=0.8, ls=":")
                ax.scatter(across, y, s=49, facecolors="none", edgecolors=colour)
        if key == "quality" and kind == "perplexity":  # log, with plain numbers on the major ticks only
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(name)
        ax.axhline(1.0, color="black", lw=0.6, ls="--")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("tokens/s ÷ our greedy's (median, IQR)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, legend_h / (4.2 + legend_h), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal (cost, quality) points, lowest cost first: no other point has
    lower or equal cost with higher quality, or lower cost with equal quality."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    best, keep = -float("inf"), []
    for i in order:
        if points[i][1] > best:
            keep.append(i)
            best = points[i][1]
    return keep


def pareto(plt, rows: list[dict], title: str, path: Path) -> list[Path]:
    """Quality against NFE per task (one panel each; the whole cell when no tasks), front drawn."""
    rows = [r for r in rows if r.get("nfe") and r.get("quality") is not None]
    if len(rows) < 2:
        return []
    tasks = list(rows[0]["by_task"]) if rows[0].get("by_task") else [None]
    cols = min(len(tasks), 5)
    fig, axes = plt.subplots((len(tasks) + cols - 1) // cols, cols, figsize=(3.2 * cols, 3.0 * ((len(tasks) + cols - 1) // cols)),
                             squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        pts = [((r["by_task"][task]["nfe"], r["by_task"][task]["accuracy"]) if task else (r["nfe"], r["quality"]))
               for r in rows]
        for r, (x, y) in zip(rows, pts):
            ax.scatter(x, y, s=25, marker="*" if r["row"] == "llada" else "o")
            ax.annotate(r["row"], (x, y), fontsize=5, xytext=(2, 2), textcoords="offset points")
        f = front(pts)
        ax.plot([pts[i][0] for i in f], [pts[i][1] for i in f], color="black", lw=0.8, ls="--", drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_title(task or ("agreement" if rows[0]["quality_kind"] == "agreement" else "accuracy"), fontsize=8)
        ax.set_xlabel("NFE per generation", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("task accuracy" if rows[0]["quality_kind"] == "accuracy" else "agreement with llada",
                            fontsize=7)
    fig.suptitle(f"quality vs NFE (Pareto front dashed): {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
