"""PNG plots: speedup bars with their interquartile range, and speed vs quality for the rows
whose output may differ from greedy (sampling and lossy rows), greedy as the reference point.
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
            fig, ax = plt.subplots(figsize=(5, 4))
            for r in lossy:
                ax.scatter(r["quality"], r["speedup_vs_greedy"]["median"],
                           marker="*" if r["row"] == "greedy" else "o", s=80)
                ax.annotate(r["row"], (r["quality"], r["speedup_vs_greedy"]["median"]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
            kind = lossy[0]["quality_kind"]
            ax.set_xlabel({"accuracy": "task accuracy", "satisfied": "share satisfying the checker"}.get(
                kind, "perplexity under the target (lower is better)"))
            ax.set_ylabel("speedup vs our greedy")
            ax.set_title(f"speed vs quality: {wl} on {model}", fontsize=9)
            fig.tight_layout()
            p = out / f"quality{tag}.png"
            fig.savefig(p, dpi=120)
            plt.close(fig)
            paths.append(p)
    from . import compute

    return paths + compute.plot(results, out)  # quality against compute, for the cells with a rate quality


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
