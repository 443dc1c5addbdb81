"""`decodelab` command line: methods, generate, demo, zoo, bench, train.

Every DecodeLabError becomes one line `decodelab: <message>` on stderr and exit code 2; argparse
usage errors also exit 2. Method flags are built from the method's config dataclass.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from .errors import DecodeLabError

SAMPLING_FLAGS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "seed")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except DecodeLabError as e:
        print(f"decodelab: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("decodelab: interrupted", file=sys.stderr)
        return 130


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decodelab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("methods", help="list the decoding methods")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("generate", help="decode a prompt with a method")
    p.add_argument("prompt", help="prompt text, or comma-separated token ids with --ids")
    p.add_argument("--model", required=True, help="model directory, zoo:NAME or hub name")
    p.add_argument("--method", default="greedy", help="decoding method (see `decodelab methods`)")
    p.add_argument("--draft", help="draft model for speculative methods")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence")
    p.add_argument("--ids", action="store_true", help="the prompt is comma-separated token ids")
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust-remote-code", action="store_true")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print tokens, text and stats as JSON")
    out.add_argument("--stream", action="store_true", help="print tokens as they are committed")
    g = p.add_argument_group("sampling (transformers names)")
    g.add_argument("--do-sample", action="store_true", default=None)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--min-p", type=float)
    g.add_argument("--seed", type=int)
    _add_method_flags(p, _peek(argv, "--method", "greedy"))
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="decode a HumanEval prompt with the zoo models, greedy and sps")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, the fastest for the zoo models)")
    p.set_defaults(func=cmd_demo)

    for mod in ("zoo", "bench", "train"):  # each family of commands lives with its package
        try:
            cli = __import__(f"decodelab.{mod}.cli", fromlist=["add_commands"])
        except ModuleNotFoundError as e:
            if e.name not in (f"decodelab.{mod}", f"decodelab.{mod}.cli"):
                raise
            continue
        cli.add_commands(sub)
    return parser


def _peek(argv: list[str], flag: str, default: str) -> str:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return default


def _add_method_flags(p: argparse.ArgumentParser, method: str) -> None:
    """One flag per field of the method's config dataclass (unknown methods are reported later)."""
    from .registry import all_methods

    spec = all_methods().get(method)
    if spec is None:
        return
    g = p.add_argument_group(f"options of method '{method}'")
    hints = typing.get_type_hints(spec.config)
    for f in dataclasses.fields(spec.config):
        kind = hints.get(f.name, str)
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            g.add_argument(flag, dest=f"m_{f.name}", action=argparse.BooleanOptionalAction, default=None)
        else:
            conv = kind if kind in (int, float, str) else str
            g.add_argument(flag, dest=f"m_{f.name}", type=conv, default=None,
                           help=f"default: {f.default!r}")


def cmd_methods(args) -> int:
    from .api import methods

    table = methods()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'method':<18}{'family':<16}{'lossless':<10}{'needs':<22}summary")
    for name, m in table.items():
        print(f"{name:<18}{m['family']:<16}{str(m['lossless'] or '-'):<10}{', '.join(m['needs']) or '-':<22}"
              f"{m['summary'][:70]}")
    return 0


def cmd_generate(args) -> int:
    from . import api
    from .registry import get

    get(args.method)  # unknown method: fail before loading any model
    kwargs = {k: getattr(args, k) for k in SAMPLING_FLAGS if getattr(args, k) is not None}
    kwargs.update({k[2:]: v for k, v in vars(args).items() if k.startswith("m_") and v is not None})
    prompt = _parse_ids(args.prompt) if args.ids else args.prompt
    model = api.load(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    draft = api.load(args.draft, device=args.device, trust_remote_code=args.trust_remote_code) if args.draft else None
    common = dict(draft=draft, max_new_tokens=args.max_new_tokens, ignore_eos=args.ignore_eos, **kwargs)
    if args.stream:
        for chunk in api.stream(model, prompt, args.method, **common):
            text = model.tokenizer.decode(chunk) if model.tokenizer is not None else " ".join(map(str, chunk)) + " "
            print(text, end="", flush=True)
        print()
        return 0
    out = api.generate(model, prompt, args.method, **common)
    if args.json:
        print(json.dumps({"method": args.method, "tokens": out.tokens, "text": out.text,
                          "stats": out.stats.as_dict()}))
    else:
        print(out.text if out.text is not None else " ".join(map(str, out.tokens)))
    return 0


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise DecodeLabError(f"--ids expects comma-separated integers, got '{text}'") from None


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(max_new_tokens=args.max_new_tokens, threads=args.threads)


if __name__ == "__main__":
    raise SystemExit(main())
