"""Model cards: ``card.json`` (machine-readable figures) and ``README.md`` next to a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path


def read_card(ckpt_dir: Path) -> dict:
    p = Path(ckpt_dir) / "card.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def write_card(ckpt_dir: Path, card: dict) -> None:
    ckpt_dir = Path(ckpt_dir)
    (ckpt_dir / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (ckpt_dir / "README.md").write_text(render_readme(card))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int) and v >= 10000:
        return f"{v:,}"
    return str(v)


def render_readme(card: dict) -> str:
    name = card.get("name", "?")
    r = card.get("recipe", {})
    lines = [
        f"# zoo:{name}",
        "",
        r.get("description", ""),
        "",
        f"- architecture: `{card.get('architecture')}` (load with `transformers.{card.get('auto_class')}`), "
        f"weights {card.get('dtype')} safetensors",
        f"- parameters: {_fmt(card.get('parameters'))}",
        f"- tokens seen: {_fmt(card.get('tokens_seen'))} (best held-out checkpoint at {_fmt(card.get('tokens_seen_at_best'))})",
        f"- steps: {card.get('steps')} (kept step {card.get('best_step')}), train time {card.get('train_time_s')} s on {card.get('device')}",
        f"- command: `{card.get('command')}`",
        f"- trained with Python {card.get('python')} standard library, torch {card.get('torch')}, seed {card.get('seed')}",
        "",
        "## Figures",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    skip = {"name", "recipe", "command", "architecture", "auto_class", "task_accuracy", "sample", "python", "torch"}
    for k in sorted(card):
        if k in skip:
            continue
        lines.append(f"| {k} | {_fmt(card[k])} |")
    acc = card.get("task_accuracy")
    if acc:
        lines += ["", "## Task accuracy (test split)", "", "| task | exact match / validity |", "| --- | --- |"]
        for k, v in acc.items():
            lines.append(f"| {k} | {_fmt(v)} |")
    if card.get("sample"):
        lines += ["", "## Sample", "", "```python", card["sample"], "```"]
    lines += [
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps(r, indent=2, sort_keys=True),
        "```",
        "",
        "Losses are in nats/token. Held-out = the corpus's held-out split (code) or test split (tasks).",
        "For masked diffusion models `heldout_loss` is the MDLM bound (1/t-weighted masked cross-entropy",
        "averaged over all tokens) and `heldout_masked_ce` the plain mean cross-entropy on masked tokens.",
        "The loss curve is `loss.png`; the full log `training_log.jsonl`.",
        "",
    ]
    return "\n".join(lines)
