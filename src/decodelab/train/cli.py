"""`decodelab train ...`: recipes for small trained parts.

  decodelab train acceptance-head --target zoo:code-target --draft zoo:code-draft
trains the SpecDec++ acceptance head for that draft and writes it (weights, config, held-out
Brier score and AUC) to --out, by default the bundled zoo/heads/<draft name>.

  decodelab train hyperfit --base zoo:code-target
hyperfits the model (train/hyperfit.py) and writes the checkpoint with its card, by default the
bundled zoo/checkpoints/code-target-hyperfit.

  decodelab train learn2pd --model zoo:tasks-mdlm [--block-length 8]
trains a Learn2PD filter for that masked diffusion LM (train/learn2pd.py) and writes it with its
card (held-out precision and recall), by default the bundled zoo/heads/<model>-learn2pd (or
<model>-learn2pd-b<B> for blocks shorter than the canvas).

Any other module of this package that defines ``add_command(subparsers)`` adds its own
``decodelab train NAME`` (recipe_modules()).
"""
from __future__ import annotations

import dataclasses
import json


THREADS_HELP = "torch CPU threads (1 is often much faster on a busy machine)"


def recipe_arguments(parser, recipe_cls, skip: tuple[str, ...] = ()) -> None:
    """--threads and one --option per field of the recipe dataclass, with its default (not for the
    fields in `skip`, whose options the recipe's command adds itself)."""
    parser.add_argument("--threads", type=int, help=THREADS_HELP)
    import argparse

    for f in dataclasses.fields(recipe_cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):  # type=bool would read "False" as True
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f"default: {f.default}")
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, help=f"default: {f.default}")


def recipe_from(args, recipe_cls):
    """Apply --threads and build the recipe from the parsed options."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return recipe_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(recipe_cls)})


def command_line() -> str:
    """The command as typed, for the card."""
    import shlex
    import sys

    return "decodelab " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def add_commands(sub) -> None:
    from .acceptance_head import HeadRecipe

    p = sub.add_parser("train", help="train small parts some methods need (decodelab train -h lists them)")
    tsub = p.add_subparsers(metavar="WHAT")
    a = tsub.add_parser("acceptance-head", help="train the SpecDec++ acceptance head for a draft model")
    a.add_argument("--target", required=True, help="target model (directory or zoo:NAME)")
    a.add_argument("--draft", required=True, help="draft model the head reads (directory or zoo:NAME)")
    a.add_argument("--out", help="output directory (default: the bundled zoo/heads/<draft name>)")
    recipe_arguments(a, HeadRecipe)
    a.set_defaults(func=cmd_acceptance_head)
    from .hyperfit import HyperfitRecipe

    h = tsub.add_parser("hyperfit", help="hyperfit a causal LM (arXiv 2412.04318) and write it with its card")
    h.add_argument("--base", default="zoo:code-target", help="model to fine-tune (directory or zoo:NAME)")
    h.add_argument("--out", help="output directory (default: the bundled zoo/checkpoints/code-target-hyperfit "
                                 "for zoo:code-target, else ./<base name>-hyperfit)")
    recipe_arguments(h, HyperfitRecipe)
    h.set_defaults(func=cmd_hyperfit)
    from .learn2pd import Learn2PDRecipe

    lp = tsub.add_parser("learn2pd", help="train a Learn2PD filter (arXiv 2509.25188) for a masked diffusion LM")
    lp.add_argument("--model", required=True, help="masked diffusion LM trained on the zoo tasks (zoo:NAME or a "
                                                  "directory)")
    lp.add_argument("--out", help="output directory (default: the bundled zoo/heads/<model>-learn2pd, or "
                                  "<model>-learn2pd-b<B> with --block-length B shorter than the canvas)")
    recipe_arguments(lp, Learn2PDRecipe)
    lp.set_defaults(func=cmd_learn2pd)
    for module in recipe_modules():
        module.add_command(tsub)


def recipe_modules() -> list:
    """The other modules of this package that define ``add_command(subparsers)``: a recipe adds its
    own ``decodelab train NAME`` by defining it, in alphabetical order of module name."""
    import importlib
    import pkgutil

    from .. import train

    mods = [importlib.import_module(f"{train.__name__}.{i.name}") for i in pkgutil.iter_modules(train.__path__)]
    return [m for m in mods if callable(getattr(m, "add_command", None))]


def default_head_name(draft: str) -> str:
    return draft[4:] if draft.startswith("zoo:") else draft.rstrip("/").split("/")[-1]


def cmd_acceptance_head(args) -> int:
    import torch

    from .. import api
    from ..errors import DecodeLabError
    from .acceptance_head import HEADS_DIR, HeadRecipe, train_head

    recipe = recipe_from(args, HeadRecipe)
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


def cmd_hyperfit(args) -> int:
    from pathlib import Path

    from .hyperfit import HyperfitRecipe, run

    recipe = recipe_from(args, HyperfitRecipe)
    if args.out:
        out = args.out
    elif args.base == "zoo:code-target":
        from ..zoo import CHECKPOINTS_DIR

        out = str(CHECKPOINTS_DIR / "code-target-hyperfit")
    else:
        out = str(Path.cwd() / f"{default_head_name(args.base)}-hyperfit")
    path = run(args.base, out, recipe, command=command_line())
    card = json.loads((Path(path) / "card.json").read_text())
    print(json.dumps({"out": str(path), "train_loss_final": card["train_loss_final"],
                      "heldout_loss": card["heldout_loss"], "decode_figures": card.get("decode_figures")}, indent=2))
    return 0


def cmd_learn2pd(args) -> int:
    from pathlib import Path

    from .learn2pd import HEADS_DIR, Learn2PDRecipe, default_filter_name, run

    recipe = recipe_from(args, Learn2PDRecipe)
    name = default_head_name(args.model)
    out = args.out or str(HEADS_DIR / default_filter_name(name, None if recipe.block == recipe.gen_length
                                                          else recipe.block))
    path = run(args.model, out, recipe, command=command_line())
    card = json.loads((Path(path) / "card.json").read_text())
    print(json.dumps({"out": str(path), "heldout": card["heldout"], "decode_figures": card.get("decode_figures")},
                     indent=2))
    return 0
