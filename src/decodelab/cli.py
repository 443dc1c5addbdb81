"""`decodelab` command line: methods, generate, demo, zoo, bench, train, serve, convert.

Every DecodeLabError becomes one line `decodelab: <message>` on stderr and exit code 2; argparse
usage errors also exit 2. Method flags are built from the method's config dataclass.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
import warnings

from .errors import DecodeLabError


def _warn(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"decodelab: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _warn  # one line per warning, without a source location
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

    p = sub.add_parser("methods", help="list the decoding methods, or one method's options")
    p.add_argument("name", nargs="?", help="a method: show its description and options")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("generate", help="decode a prompt with a method")
    p.add_argument("prompt", help="prompt text, or comma-separated token ids with --ids")
    p.add_argument("--model", required=True, help="model directory, zoo:NAME, hub name or .gguf file")
    p.add_argument("--method", default="greedy", help="decoding method (see `decodelab methods`)")
    p.add_argument("--draft", help="draft model for speculative methods")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence")
    p.add_argument("--ids", action="store_true", help="the prompt is comma-separated token ids")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop once the output contains TEXT (repeatable)")
    p.add_argument("--chat", action="store_true", help="send the prompt as a user message through the model's "
                                                       "chat template")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="weights and compute dtype (default float32)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "llamacpp"),
                   help="torch (transformers) or llamacpp (llama.cpp; a model directory or zoo name is converted "
                        "once to an f32 GGUF); auto: llamacpp for a .gguf file, else torch")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print tokens, text and stats as JSON")
    out.add_argument("--stream", action="store_true", help="print tokens as they are committed")
    p.add_argument("--logprobs", action="store_true", help="with --json: each token's log-probability")
    from .core.sampling import SamplingConfig

    _add_option_flags(p.add_argument_group("sampling (transformers names; llama.cpp's where transformers has "
                                           "none)"), SamplingConfig)
    _add_method_flags(p, _peek(argv, "--method", "greedy"))
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="decode a HumanEval prompt with the zoo models, greedy and sps")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, the fastest for the zoo models)")
    p.set_defaults(func=cmd_demo)

    for mod in ("zoo", "bench", "train", "serve", "convert"):  # each family of commands lives with its package
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
    """One flag per option of the method's config (unknown methods are reported later)."""
    from .registry import all_methods

    spec = all_methods().get(method)
    if spec is not None:
        _add_option_flags(p.add_argument_group(f"options of method '{method}'"), spec.config, prefix="m_")


def _add_option_flags(g, config, prefix: str = "") -> None:
    """A flag per Options field, its help the option's own line plus default and allowed values.
    Values reach the config as typed by argparse and are checked there (one message per bad value)."""
    from .options import base_type

    hints = typing.get_type_hints(config)
    for f, d in zip(dataclasses.fields(config), config.describe()):
        kind, _ = base_type(hints[f.name])
        flags = ["--" + name.replace("_", "-") for name in [f.name] + d["aliases"]]  # aliases: more spellings
        auto = f.metadata.get("auto")
        text = f"{d['help']} (default {'auto' if auto and f.default is None else repr(f.default)}; {d['allowed']})"
        if kind is bool:
            g.add_argument(*flags, dest=prefix + f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=text)
        else:
            g.add_argument(*flags, dest=prefix + f.name, type=_or_auto(kind) if auto else kind, default=None,
                           help=text)


def _or_auto(kind):
    """An argparse type that also takes the word auto (the config stores it as None)."""
    def convert(text: str):
        return "auto" if text == "auto" else kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its error message
    return convert


def cmd_methods(args) -> int:
    from .api import methods

    table = methods()
    if args.name:
        from .registry import get

        table = {args.name: get(args.name).describe()}
        if not args.json:
            print(_method_page(table[args.name]))
            return 0
    if args.json:
        print(json.dumps(table, indent=2, default=repr))
        return 0
    rows = [("method", "family", "lossless", "needs", "summary")]
    rows += [(n, m["family"], str(m["lossless"] or "-"), ", ".join(m["needs"]) or "-", m["summary"])
             for n, m in table.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        head = "  ".join(c.ljust(w) for c, w in zip(r, widths))
        print(f"{head}  {_clip(r[4], max(30, 120 - len(head)))}")
    print("\n`decodelab methods NAME` shows a method's options.")
    return 0


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def _method_page(m: dict) -> str:
    """A method's description and its options, one line each."""
    lines = [f"{m['name']}: {m['summary']}", "",
             f"family {m['family']}; lossless {m['lossless'] or 'no'}; needs {', '.join(m['needs']) or 'nothing'}; "
             f"modes {', '.join(m['modes'])}" + (f"; compared with {m['peer']}" if m["peer"] else "")
             + ("; runs at a fixed budget (bench: fixed_budget=B)" if m["fixed_budget"] else ""), ""]
    if not m["options"]:
        return "\n".join(lines + ["options: none"])
    width = max(len(o["name"]) for o in m["options"]) + 2
    lines.append("options:")
    for o in m["options"]:
        also = "".join(f"; also --{a.replace('_', '-')}" for a in o.get("aliases", []))
        lines.append(f"  --{o['name'].replace('_', '-'):<{width}}{o['help']} (default {o['default']!r}; {o['allowed']}"
                     f"{also})")
    return "\n".join(lines)


def cmd_generate(args) -> int:
    from . import api
    from .core.sampling import SamplingConfig
    from .registry import get

    get(args.method)  # unknown method: fail before loading any model
    sampling = [f.name for f in dataclasses.fields(SamplingConfig)]
    kwargs = {k: getattr(args, k) for k in sampling if getattr(args, k) is not None}
    kwargs.update({k[2:]: v for k, v in vars(args).items() if k.startswith("m_") and v is not None})
    if args.logprobs and not args.json:
        raise DecodeLabError("--logprobs needs --json (the log-probabilities are printed with the tokens)")
    if args.chat and args.ids:
        raise DecodeLabError("--chat takes a text prompt, not --ids")
    prompt = _parse_ids(args.prompt) if args.ids else args.prompt
    quiet_transformers(progress_only=True)
    load = dict(device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code, backend=args.backend)
    model = api.load(args.model, **load)
    draft = api.load(args.draft, **load) if args.draft else None
    common = dict(draft=draft, max_new_tokens=args.max_new_tokens, ignore_eos=args.ignore_eos, stop=args.stop, **kwargs)
    if args.chat:
        common["messages"], prompt = [{"role": "user", "content": prompt}], None
    if args.stream:
        for chunk in api.stream(model, prompt, args.method, **common):
            text = model.tokenizer.decode(chunk) if model.tokenizer is not None else " ".join(map(str, chunk)) + " "
            print(text, end="", flush=True)
        print()
        return 0
    out = api.generate(model, prompt, args.method, logprobs=args.logprobs, **common)
    if args.json:
        several = {} if out.sequences is None else {"sequences": out.sequences} | (  # beams, superposed drafts
            {"texts": [model.tokenizer.decode(s) for s in out.sequences]} if model.tokenizer is not None else {})
        print(json.dumps({"method": args.method, "tokens": out.tokens, "text": out.text, "stats": out.stats.as_dict()}
                         | ({"logprobs": out.logprobs} if args.logprobs else {}) | several))
    else:
        print(out.text if out.text is not None else " ".join(map(str, out.tokens)))
    return 0


def quiet_transformers(progress_only: bool = False) -> None:
    """No weight-loading progress bars (the output is the result); with progress_only=False also no
    per-call generation-flag warnings (the bench's output is its report)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    if not progress_only:
        logging.set_verbosity_error()


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
