"""`decodelab bench` and `decodelab bench report`.

Exit codes: 0 all rows ok; 1 some row FAILED (a lossless row differing from greedy, or a row that
raised; the results are still written); 2 bad input; 130 interrupted (partial results written).
"""
from __future__ import annotations

import sys

from ..cli import quiet_transformers
from ..errors import DecodeLabError

SUITE_KEYS = {"workloads", "models", "limit", "repeats", "warmup", "max_new_tokens", "seed", "ignore_eos", "peers",
              "out", "device", "ray", "threads", "backend"}


def add_commands(sub) -> None:
    p = sub.add_parser("bench", help="benchmark decoding methods side by side with transformers generate()",
                       description="Run methods and transformers peers on the same model, prompts and settings; "
                                   "write results.json, results.md and PNG plots.")
    p.add_argument("--workload", action="append", help="humaneval | code-heldout | tasks | tasks:NAME | synthetic "
                                                        "(repeatable; default humaneval)")
    p.add_argument("--method", action="append", metavar="NAME[:k=v,...]",
                   help="a row: method with options, e.g. sps:gamma=4 or sps:fixed_budget=5, or a peer "
                        "hf:assisted:fixed_budget=5 "
                        "(repeatable; default every method the model can serve)")
    p.add_argument("--suite", help="TOML suite file: [[method]] rows and a [bench] table of settings")
    p.add_argument("--model", action="append", help="target model dir or zoo:NAME (repeatable; default: the zoo "
                                                     "model of each workload)")
    p.add_argument("--draft", action="append", help="draft model, one for all models or one per --model")
    p.add_argument("--limit", type=int, help="first N prompts of each workload")
    p.add_argument("--repeats", type=int, help="timed repeats per prompt (default 3)")
    p.add_argument("--warmup", type=int, help="untimed warm-up generations per row (default 1)")
    p.add_argument("--max-new-tokens", type=int, help="override the workload's max new tokens")
    p.add_argument("--seed", type=int, help="workload and sampling seed (default 0)")
    p.add_argument("--respect-eos", dest="ignore_eos", action="store_false", default=None,
                   help="stop at end-of-sequence (default: ignore it, so every row generates the same count)")
    p.add_argument("--no-peers", dest="peers", action="store_false", default=None,
                   help="leave out the transformers generate() rows")
    p.add_argument("--out", help="output directory (default bench-out)")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is often fastest for "
                                               "small models on a busy machine)")
    p.add_argument("--backend", choices=("torch", "llamacpp"),
                   help="run our method rows on this backend (default torch; a row's own backend=... wins): "
                        "llamacpp runs them on the same weights as an f32 GGUF, compared with our greedy there")
    p.add_argument("--ray", metavar="ADDRESS", help="fan the grid out as Ray tasks ('local' starts a local Ray)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)
    rsub = p.add_subparsers(metavar="SUBCOMMAND")
    r = rsub.add_parser("report", help="recompute the figures from a results JSON's raw records; re-render results.md and plots")
    r.add_argument("results", help="results.json written by decodelab bench")
    r.add_argument("--out", help="output directory (default: the JSON's directory)")
    r.add_argument("--no-plots", action="store_true")
    r.set_defaults(func=cmd_report)


def _settings(args) -> tuple[dict, list]:
    """Merge the suite file's [bench] table and the command line (the command line wins)."""
    from .rows import load_suite, parse_row

    opts, rows = {}, []
    if args.suite:
        rows, opts = load_suite(args.suite)
        unknown = sorted(set(opts) - SUITE_KEYS)
        if unknown:
            raise DecodeLabError(f"suite file '{args.suite}': unknown [bench] key(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(SUITE_KEYS))}")
    for key in sorted(SUITE_KEYS - {"workloads", "models"}):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    if args.workload:
        opts["workloads"] = args.workload
    if args.model:
        drafts = args.draft or []
        if len(drafts) > 1 and len(drafts) != len(args.model):
            raise DecodeLabError("give one --draft for all models or one per --model")
        opts["models"] = [{"target": m, "draft": drafts[0] if len(drafts) == 1 else (drafts[i] if drafts else None)}
                          for i, m in enumerate(args.model)]
    elif args.draft:
        raise DecodeLabError("--draft needs --model")
    rows += [parse_row(m) for m in args.method or []]
    return opts, rows


def cmd_bench(args) -> int:
    from . import grid, report
    from .rows import make_row
    from .runner import Settings

    opts, rows = _settings(args)
    names = opts.get("workloads", ["humaneval"])
    if isinstance(names, str):
        names = [names]
    models, extra = _models(opts.get("models", []))
    # unknown workload: fails here, before loading; with only diffusion rows, the zoo's diffusion models
    cells = grid.cells_for(models, list(names), diffusion=bool(rows) and all(r.diffusion for r in rows))
    strict = bool(rows) or any(e["rows"] for e in extra.values())
    if not rows:
        from ..registry import all_methods

        rows = [make_row(name, {}) for name in all_methods()] if not strict else []
    rows = _on_backend(rows, opts.get("backend", "torch"))
    for own in extra.values():
        own["rows"] = _on_backend(own.get("rows", []), opts.get("backend", "torch"))
    settings = Settings(repeats=opts.get("repeats", 3), warmup=opts.get("warmup", 1), seed=opts.get("seed", 0),
                        limit=opts.get("limit"), max_new_tokens=opts.get("max_new_tokens"),
                        ignore_eos=opts.get("ignore_eos", True), device=opts.get("device", "cpu"),
                        threads=opts.get("threads"))
    quiet_transformers()
    results = grid.run(cells, rows, settings, peers_on=opts.get("peers", True), ray=opts.get("ray"),
                       progress=not args.no_progress, strict=strict, extra=extra)
    out = opts.get("out", "bench-out")
    path = report.save(results, out)
    written = report.render(results, out, plots=not args.no_plots)
    print(report.markdown(results))
    print(f"wrote {path}, " + ", ".join(str(p) for p in written), file=sys.stderr)
    return _exit_code(results)


def _on_backend(rows: list, backend: str) -> list:
    """Our causal method rows without a backend of their own, moved to `backend`."""
    from .rows import BACKENDS, make_row

    if backend not in BACKENDS:
        raise DecodeLabError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return rows
    return [r if r.peer or r.diffusion or "backend" in r.kwargs else make_row(r.method, {**r.kwargs, "backend": backend})
            for r in rows]


MODEL_KEYS = {"target", "draft", "workloads", "methods", "limit"}


def _models(entries) -> tuple[list[tuple], dict]:
    """A suite's models: "DIR" or {target, draft, workloads, methods, limit}; workloads (that
    model's cells, instead of the [bench] list), methods (rows for that model only, besides the
    [[method]] rows) and limit (its prompt count) let one run cover models that take different
    workloads, rows and budgets. Returns (models, {target: {"rows": [...], "limit": n}})."""
    from .rows import parse_row

    models, extra = [], {}
    for m in entries:
        if isinstance(m, str):
            models.append((m, None))
            continue
        if not isinstance(m, dict) or "target" not in m or set(m) - MODEL_KEYS:
            raise DecodeLabError(f"a suite model is a path or a table with target and optionally "
                                 f"{', '.join(sorted(MODEL_KEYS - {'target'}))}; got {m!r}")
        models.append((m["target"], m.get("draft"), list(m.get("workloads") or [])))
        own = {"rows": [parse_row(x) for x in m.get("methods") or []], "limit": m.get("limit")}
        if own["rows"] or own["limit"] is not None:
            extra[m["target"]] = own
    return models, extra


def cmd_report(args) -> int:
    from pathlib import Path

    from . import metrics, report

    results = report.load(args.results)
    results["rows"] = metrics.summarize(results["units"])  # figures from the raw records, as this version computes them
    out = args.out or Path(args.results).parent
    written = report.render(results, out, plots=not args.no_plots)
    print(report.markdown(results))
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def _exit_code(results: dict) -> int:
    fails = [r for r in results["rows"] if r["status"].startswith("FAIL")]
    for r in fails:
        print(f"decodelab: bench row {r['row']} ({r['workload']}) {r['status']}", file=sys.stderr)
    if results["partial"]:
        print("decodelab: interrupted; partial results written", file=sys.stderr)
        return 130
    return 1 if fails else 0


def main(argv=None) -> int:  # pragma: no cover  (python -m decodelab.bench.cli)
    from ..cli import main as top

    return top(["bench", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
