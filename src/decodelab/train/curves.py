"""The loss curve every `decodelab train` recipe writes: train and held-out loss per epoch."""
from __future__ import annotations

from pathlib import Path


def epoch_loss_plot(rows: list[dict], path: Path, title: str, ylabel: str, train_label: str = "train") -> None:
    """Plot rows' `train_loss` and `heldout_loss` against `epoch` to a PNG at path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", markersize=3, label=train_label)
    ax.plot(epochs, [r["heldout_loss"] for r in rows], "s-", markersize=3, label="held-out")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
