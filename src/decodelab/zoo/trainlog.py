"""``training_log.jsonl`` (one JSON object per logged step or evaluation) and its plot ``loss.png``."""

from __future__ import annotations

import json
import time
from pathlib import Path


class TrainLog:
    """Appends rows to ``path`` as they come (flushed: a running job can be watched) and
    keeps them for the card; ``elapsed()`` counts from creation."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        self.t0 = time.time()
        self._f = self.path.open("w")

    def emit(self, row: dict) -> None:
        self.rows.append(row)
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def elapsed(self) -> float:
        return round(time.time() - self.t0, 1)

    def train_losses(self) -> list[float]:
        return [r["loss"] for r in self.rows if r.get("kind") == "train"]

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def plot_log(log_path: Path, png_path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    tr = [(r["tokens"], r["loss"]) for r in rows if r.get("kind") == "train"]
    ev = [(r["tokens"], r["heldout_loss"]) for r in rows if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(6, 4))
    if tr:
        ax.plot([a for a, _ in tr], [b for _, b in tr], label="train (logged batches)", lw=1)
    if ev:
        ax.plot([a for a, _ in ev], [b for _, b in ev], "o-", label="held-out", lw=1.5)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
