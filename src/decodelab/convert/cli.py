"""``decodelab convert --to gguf MODEL OUT [--dtype f32|f16|q8_0] [--force]``; wired in by ``decodelab.cli``."""
from __future__ import annotations

import argparse


def add_commands(subparsers) -> argparse.ArgumentParser:
    from .to_gguf import DTYPES

    p = subparsers.add_parser("convert", help="convert a model for another engine (GGUF for llama.cpp)")
    p.add_argument("model", help="model directory or zoo:NAME")
    p.add_argument("out", help="output file (written to a temporary file, then renamed)")
    p.add_argument("--to", default="gguf", choices=("gguf",), help="target format (default gguf)")
    p.add_argument("--dtype", default="f32", help="; ".join(f"{k}: {v}" for k, v in DTYPES.items()) + " (default f32)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(func=cmd_convert)
    return p


def cmd_convert(args) -> int:
    from . import convert
    from .to_gguf import DTYPES

    out = convert(args.model, args.out, to=args.to, dtype=args.dtype, force=args.force)
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:.1f} MiB, {args.dtype}: {DTYPES[args.dtype]})")
    return 0
