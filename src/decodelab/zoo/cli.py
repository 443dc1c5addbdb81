"""``decodelab zoo list | info NAME | train NAME ... | export-corpus DIR``; wired in by ``decodelab.cli``."""

from __future__ import annotations

import argparse
import json

from decodelab.errors import DecodeLabError


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise DecodeLabError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise DecodeLabError(f"expected a positive integer, got {text!r}")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise DecodeLabError(f"seed must be a non-negative integer, got {text!r}") from None
    if v < 0:
        raise DecodeLabError(f"seed must be a non-negative integer, got {text!r}")
    return v


def _fmt_loss(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


def cmd_list(args) -> int:
    from decodelab import zoo

    rows = zoo.list_models()
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<12} {'kind':<7} {'params':>9} {'tokens':>11} {'held-out':>9}  bundled")
    for r in rows:
        params = f"{r['parameters'] / 1e6:.2f}M" if "parameters" in r else "-"
        tokens = f"{r['tokens_seen']:,}" if "tokens_seen" in r else "-"
        print(f"{r['name']:<12} {r['kind']:<7} {params:>9} {tokens:>11} {_fmt_loss(r.get('heldout_loss')):>9}  "
              f"{'yes' if r['bundled'] else 'no'}")
    return 0


def cmd_info(args) -> int:
    from decodelab import zoo

    print(json.dumps(zoo.info(args.name), indent=2))
    return 0


def cmd_train(args) -> int:
    from decodelab import zoo

    out = zoo.train(args.name, device=args.device, tokens=args.tokens, seed=args.seed, out_dir=args.out,
                    max_steps=args.max_steps, init_from=args.init_from, stage=args.stage, precision=args.precision)
    print(f"trained {args.name} into {out}")
    return 0


def cmd_export_corpus(args) -> int:
    from decodelab.zoo.corpus import STDLIB_ENV, export_stdlib, python_version

    n = export_stdlib(args.dest)
    print(f"wrote the code corpus ({n} files of Python {python_version()}'s standard library) into {args.dest}; "
          f"train on it elsewhere with {STDLIB_ENV}={args.dest}")
    return 0


def add_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``zoo`` with ``list``, ``info``, ``train`` and ``export-corpus`` to the top-level subparsers."""
    zp = subparsers.add_parser("zoo", help="the bundled model zoo: list, inspect, (re)train")
    zsub = zp.add_subparsers(dest="zoo_command", metavar="{list,info,train,export-corpus}")
    zsub.required = True

    p = zsub.add_parser("list", help="the zoo models and their headline figures")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = zsub.add_parser("info", help="a zoo model's card figures")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)

    p = zsub.add_parser("train", help="run a zoo model's recipe")
    p.add_argument("name")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--tokens", type=_positive_int, default=None, help="token budget (default: the recipe's)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", default=None,
                   help="output directory (default ./zoo-NAME); written whole when the run ends (an interrupted "
                        "run leaves it as it was; a previous checkpoint there is replaced); create OUT/STOP to "
                        "stop gracefully, keeping the best checkpoint so far")
    p.add_argument("--max-steps", dest="max_steps", type=_positive_int, default=None, help="cap optimiser steps")
    p.add_argument("--init-from", dest="init_from", default=None,
                   help="continue from this checkpoint directory (a second training stage; may be --out itself)")
    p.add_argument("--stage", choices=("all", "main", "context"), default="all",
                   help="all stages of the recipe (default), the main stage only, or its longer-context stage only "
                        "(from --init-from, a main-stage checkpoint: code-target and code-draft)")
    p.add_argument("--precision", default="fp32", metavar="{fp32,bf16}",
                   help="fp32 (default) or bf16: bfloat16 autocast while training (weights and optimiser stay "
                        "float32; held-out figures in float32), faster on CPUs with bfloat16 units "
                        "(AVX512-BF16, AMX) and on GPUs")
    p.set_defaults(func=cmd_train)

    p = zsub.add_parser("export-corpus", help="copy the code corpus (this Python's standard library) to train on "
                                              "another machine")
    p.add_argument("dest", help="a new or empty folder; on the other machine set DECODELAB_STDLIB to it")
    p.set_defaults(func=cmd_export_corpus)
    return zp
