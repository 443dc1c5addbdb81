"""PNG plots: speedup bars with their interquartile range, and speed vs quality for the rows
whose output may differ from greedy (sampling and lossy rows), greedy as the reference point."""
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
            ax.set_xlabel("task accuracy" if kind == "accuracy" else "perplexity under the target (lower is better)")
            ax.set_ylabel("speedup vs our greedy")
            ax.set_title(f"speed vs quality: {wl} on {model}", fontsize=9)
            fig.tight_layout()
            p = out / f"quality{tag}.png"
            fig.savefig(p, dpi=120)
            plt.close(fig)
            paths.append(p)
    return paths
