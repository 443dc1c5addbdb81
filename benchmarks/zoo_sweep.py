"""Train several variants of a zoo recipe at once on one GPU and keep the best by held-out loss.

For choosing zoo:code-target-l's recipe on a device machine (none was lent to train it; the
bundled one is the base variant, trained on a CPU as below; docs/zoo.md): every variant
trains from scratch in its own process through the zoo's own training loop
(``decodelab.zoo.training.run``, the code ``decodelab zoo train`` runs), with early stopping on
held-out windows; at ``--deadline`` seconds each variant is told to stop its main stage
(the STOP file, keeping its best weights) and goes on to its context stage. The variant with
the lowest held-out loss on the card (all held-out 1024-token windows) wins.

    decodelab zoo export-corpus .stdlib        # here: the corpus this Python trains on
    DECODELAB_STDLIB=.stdlib python benchmarks/zoo_sweep.py --device cuda --out /tmp/sweep --deadline 240 --pack $OUT

On a CPU (issue 16's path without a device): one variant, its main stage, then its context stage
from it (``--init-from``), each bounded by ``--deadline``. ``--precision bf16`` (bfloat16 autocast
while training) runs about 1,300 tokens/s on 2 threads of a CPU with AVX512-BF16 (2,900 on an Intel
Xeon with AMX), against about 750 in float32 (``lscpu`` lists avx512_bf16 or amx on such CPUs;
without them bfloat16 products are emulated, which this was not measured on). The bundled
code-target-l (58 + 17 min):

    python benchmarks/zoo_sweep.py --device cpu --only lr1e-3 --stage main --tokens 10000000 \
        --precision bf16 --deadline 4200 --out .runs/main
    python benchmarks/zoo_sweep.py --device cpu --only lr1e-3 --stage context --tokens 2000000 \
        --precision bf16 --init-from .runs/main/lr1e-3 --deadline 1200 --out .runs/ctx

``--pack DIR`` writes what a device machine can send back: the winner's weights in parts of at
most 15 MiB (``cat model.safetensors.part* > model.safetensors``) and every variant's card,
config and training log in one tar. ``--smoke`` runs two variants for two steps each (a check of
this script on a CPU).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

from decodelab.zoo.card import read_card
from decodelab.zoo.recipes import RECIPES

PART = 15 * 2**20

# code-target-l's recipe: from scratch, main stage at 256 tokens, context stage at 1024
BASE = RECIPES["code-target-l"]

VARIANTS = {
    "lr1e-3": {},
    "lr5e-4": {"lr": 5e-4},
    "lr2e-3": {"lr": 2e-3},
    "lr1e-3-16M": {"tokens": 16_000_000},
    "lr1e-3-attndrop": {"arch": replace(BASE.arch, attn_dropout=0.1)},
    "lr1e-3-wd0.5": {"weight_decay": 0.5},
}


def _variant(name: str):
    return replace(BASE, **VARIANTS[name])


def _train(name: str, out: str, device: str, smoke: bool, stage: str = "all", tokens: int | None = None,
           init_from: str | None = None, precision: str = "fp32") -> None:
    os.environ.setdefault("DECODELAB_NUM_THREADS", "2")
    from decodelab.zoo import training

    r = _variant(name)
    log = open(Path(out).parent / f"{name}.stderr", "w")
    sys.stderr = log  # the progress bar and warnings, per variant
    training.run(r, device=device, seed=0, out_dir=out, progress=True, evaluate=not smoke,
                 max_steps=2 if smoke else None, stage=stage, tokens=tokens, init_from=init_from,
                 precision=precision)


def _pack(best: Path, root: Path, names: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    data = (best / "model.safetensors").read_bytes()
    for i in range(0, len(data), PART):
        (dest / f"model.safetensors.part{i // PART}").write_bytes(data[i:i + PART])
    with tarfile.open(dest / "runs.tar.gz", "w:gz") as tar:
        tar.add(root / "sweep.json", arcname="sweep.json")
        for n in names:
            for f in ("card.json", "config.json", "generation_config.json", "training_log.jsonl", "loss.png"):
                if (root / n / f).is_file():
                    tar.add(root / n / f, arcname=f"{n}/{f}")
            if (root / f"{n}.stderr").is_file():
                tar.add(root / f"{n}.stderr", arcname=f"{n}.stderr")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", default=None, help="variant names (default: all)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds before the stages running are told to stop, keeping their best weights (a "
                         "variant told during its main stage goes on to its context stage; default: none)")
    ap.add_argument("--pack", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--stage", choices=("all", "main", "context"), default="all",
                    help="the recipe's stages to run (training.run's stage)")
    ap.add_argument("--tokens", type=int, default=None, help="token budget of each stage run (default: the recipe's)")
    ap.add_argument("--init-from", default=None, help="a checkpoint to start from (one variant only)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: bfloat16 autocast while training (training.run's precision)")
    args = ap.parse_args(argv)
    names = args.only or (list(VARIANTS)[:2] if args.smoke else list(VARIANTS))
    if args.init_from and len(names) != 1:
        raise SystemExit("--init-from continues one variant: name it with --only")
    if args.stage == "context" and not args.init_from:
        raise SystemExit("--stage context starts from a main-stage checkpoint: give --init-from")
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    t0 = time.time()
    procs = {n: ctx.Process(target=_train, args=(n, str(root / n), args.device, args.smoke, args.stage, args.tokens,
                                                 args.init_from, args.precision)) for n in names}
    for p in procs.values():
        p.start()
    told = False
    while any(p.is_alive() for p in procs.values()):
        time.sleep(2)
        if not told and args.deadline is not None and time.time() - t0 > args.deadline:
            for n, p in procs.items():
                if p.is_alive() and not (root / n / "card.json").exists():
                    (root / n).mkdir(parents=True, exist_ok=True)
                    (root / n / "STOP").touch()
            told = True
            print(f"{time.time() - t0:.0f}s: told the stages running to stop", flush=True)
    rows = []
    for n, p in procs.items():
        row = {"variant": n, "exitcode": p.exitcode, "recipe_changes": {k: str(v) for k, v in VARIANTS[n].items()}}
        if p.exitcode == 0:
            c = read_card(root / n)
            row.update({k: c.get(k) for k in ("heldout_loss", "heldout_loss_256", "train_loss_eval", "tokens_seen",
                                                "tokens_seen_at_best", "train_time_s", "stages")})
        rows.append(row)
        print(json.dumps({k: row.get(k) for k in ("variant", "exitcode", "heldout_loss", "heldout_loss_256",
                                                   "tokens_seen_at_best", "train_time_s")}), flush=True)
    ok = [r for r in rows if r["exitcode"] == 0 and r.get("heldout_loss") is not None]
    best = min(ok, key=lambda r: r["heldout_loss"]) if ok else None
    (root / "sweep.json").write_text(json.dumps({"best": best and best["variant"], "rows": rows,
                                                 "wall_s": time.time() - t0}, indent=1))
    print("best:", best and best["variant"], best and best["heldout_loss"], f"wall {time.time() - t0:.0f}s")
    if args.pack and best:
        _pack(root / best["variant"], root, names, Path(args.pack))
    return 0 if best else 1


if __name__ == "__main__":
    raise SystemExit(main())
