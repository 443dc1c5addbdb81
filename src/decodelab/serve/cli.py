"""`decodelab serve`: the OpenAI-compatible server and playground, on this machine or on Ray Serve."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import DecodeLabError
from .engine import Engine, Limits

_LIMIT_HELP = {
    "max_prompt_tokens": "longest prompt accepted, in tokens (after the chat template)",
    "max_tokens": "largest max_tokens a request may ask for",
    "max_concurrent": "generations decoding at once (worker threads); more wait in the queue",
    "max_queue": "requests waiting for a worker; beyond running + queued, requests get 429",
    "request_timeout": "seconds a request may take from admission to its last token (then 504)",
    "max_sessions": "learning-method sessions (decoding.session) kept, least recently used dropped",
    "max_body_bytes": "largest request body (413 beyond)",
    "shutdown_grace": "seconds running streams get to finish at shutdown before they are cancelled",
}


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible server (/v1/completions, /v1/chat/completions) with "
                                     "per-request decoding methods, and the playground at /")
    p.add_argument("--model", required=True, help="model directory or zoo:NAME (causal or masked diffusion LM)")
    p.add_argument("--draft", help="draft model for the methods that need one")
    p.add_argument("--name", help="the model id clients use (default: --model as given)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "llamacpp"),
                   help="torch (transformers) or llamacpp (llama.cpp; a model directory or zoo name is converted "
                        "once to an f32 GGUF); auto: llama.cpp for a .gguf file, else torch")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--chat-template", metavar="FILE", help="a Jinja chat template for a model without one")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: one per generation is "
                                                          "fastest on CPU; parallelism comes from --max-concurrent)")
    p.add_argument("--bench", metavar="RESULTS.json", help="a bench results file for the /bench page")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="deploy on Ray Serve ('local' or no value starts a local Ray; else a cluster address)")
    p.add_argument("--replicas", type=int, default=1, help="with --ray: model replicas behind the endpoint")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    g = p.add_argument_group("limits (per replica)")
    for f in dataclasses.fields(Limits):
        g.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       help=f"{_LIMIT_HELP[f.name]} (default {f.default})")
    p.set_defaults(func=cmd_serve)


def spec_from(args) -> dict:
    """Everything a replica needs to build its Engine (plain values: it travels to Ray actors)."""
    template = None
    if args.chat_template:
        try:
            template = Path(args.chat_template).read_text()
        except OSError as e:
            raise DecodeLabError(f"cannot read the chat template '{args.chat_template}': {e.strerror}") from None
    limits = {f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)}
    Limits(**limits)  # refuse bad limits before anything loads
    if args.threads < 1:
        raise DecodeLabError(f"--threads must be at least 1, got {args.threads}")
    return {"model": args.model, "draft": args.draft, "name": args.name or args.model, "device": args.device,
            "backend": args.backend, "dtype": args.dtype, "trust_remote_code": args.trust_remote_code,
            "chat_template": template, "threads": args.threads, "limits": limits}


def build_engine(spec: dict) -> Engine:
    """Load the models named at start-up (never by a request) and wrap them in an Engine."""
    import torch

    from .. import api
    from ..cli import quiet_transformers

    torch.set_num_threads(spec["threads"])
    quiet_transformers(progress_only=True)
    load = dict(device=spec["device"], dtype=spec["dtype"], trust_remote_code=spec["trust_remote_code"],
                backend=spec.get("backend", "auto"))
    model = api.load(spec["model"], **load)
    draft = api.load(spec["draft"], **load) if spec.get("draft") else None
    if spec.get("chat_template"):
        if model.tokenizer is None:
            raise DecodeLabError("--chat-template needs a model with a tokenizer")
        model.tokenizer.chat_template = spec["chat_template"]
    return Engine(model, draft=draft, name=spec["name"], draft_name=spec.get("draft"), limits=Limits(**spec["limits"]))


def cmd_serve(args) -> int:
    try:
        from .server import run
    except ModuleNotFoundError as e:
        raise DecodeLabError(f"decodelab serve needs {e.name}: pip install 'decodelab[serve]'") from None
    spec = spec_from(args)
    bench = None
    if args.bench:
        from ..bench import report

        bench = report.load(args.bench)
    if args.ray is not None:
        from .ray_serve import deploy

        return deploy(spec, args.ray, args.replicas, host=args.host, port=args.port, bench=bench)
    if args.replicas != 1:
        raise DecodeLabError("--replicas needs --ray (one process serves one replica)")
    engine = build_engine(spec)
    print(f"decodelab: serving {spec['name']} on http://{args.host}:{args.port} (playground at /, API at /v1)",
          flush=True)
    run(engine, host=args.host, port=args.port, bench=bench, log_level=args.log_level)
    return 0

