"""`decodelab train ...`: recipes for small trained parts.

  decodelab train acceptance-head --target zoo:code-target --draft zoo:code-draft
trains the SpecDec++ acceptance head for that draft and writes it (weights, config, held-out
Brier score and AUC) to --out, by default the bundled zoo/heads/<draft name>.
"""
from __future__ import annotations

import dataclasses
import json


def add_commands(sub) -> None:
    from .acceptance_head import HeadRecipe

    p = sub.add_parser("train", help="train small parts some methods need (acceptance-head)")
    tsub = p.add_subparsers(metavar="WHAT")
    a = tsub.add_parser("acceptance-head", help="train the SpecDec++ acceptance head for a draft model")
    a.add_argument("--target", required=True, help="target model (directory or zoo:NAME)")
    a.add_argument("--draft", required=True, help="draft model the head reads (directory or zoo:NAME)")
    a.add_argument("--out", help="output directory (default: the bundled zoo/heads/<draft name>)")
    a.add_argument("--threads", type=int, help="torch CPU threads (1 is often much faster on a busy machine)")
    for f in dataclasses.fields(HeadRecipe):
        a.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       help=f"default: {f.default}")
    a.set_defaults(func=cmd_acceptance_head)


def default_head_name(draft: str) -> str:
    return draft[4:] if draft.startswith("zoo:") else draft.rstrip("/").split("/")[-1]


def cmd_acceptance_head(args) -> int:
    import torch

    from .. import api
    from ..errors import DecodeLabError
    from .acceptance_head import HEADS_DIR, HeadRecipe, train_head

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = HeadRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(HeadRecipe)})
    target, draft = api.load(args.target), api.load(args.draft)
    api.check_same_tokenizer(target, draft)
    tok = target.tokenizer or draft.tokenizer
    if tok is None:
        raise DecodeLabError("training an acceptance head needs a tokenizer with the target or the draft")
    torch.manual_seed(recipe.seed)
    head, metrics = train_head(target.model, draft.model, tok, recipe)
    out = args.out or str(HEADS_DIR / default_head_name(args.draft))
    head.save(out, {"target": args.target, "draft": args.draft, "metrics": metrics})
    print(json.dumps({"out": out, "heldout": metrics["heldout"]}, indent=2))
    return 0
