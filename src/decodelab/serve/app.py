"""The HTTP application: OpenAI-compatible routes over an Engine, the playground and the bench page.

Routes: GET /v1/models, /v1/models/{id}; POST /v1/completions, /v1/chat/completions (stream:
true = server-sent events, each a chunk in OpenAI's format, then `data: [DONE]`); GET
/decodelab/info (model, methods and their options, limits, load), /health; GET / (playground),
/bench (bench results page), /decodelab/bench (the results file the server was started with),
POST /decodelab/bench/render (render a results JSON sent in the body). Every error is OpenAI's
{"error": {...}} with its HTTP status; an error after a stream has started is sent as a last
event {"error": {...}} before [DONE] (the openai client raises it).

Each response carries `decodelab`: the method, its options, the stats (tau, forwards, NFE, ...),
the instance (host:pid) that served it and the wall time. Streamed chunks carry the step's token
ids and pieces and, with decoding.trace, how the step produced them (StepTrace); diffusion steps
carry the positions they unmasked.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from .engine import Chunk, Done, Engine, Failed, Generation, ServeError
from .protocol import ChatRequest, CompletionRequest, parse
from .text import TextStream

STATIC = Path(str(resources.files("decodelab.serve") / "static"))
PAGES = {"/": "index.html", "/bench": "bench.html"}


def create_app(engine: Engine, bench: dict | None = None) -> FastAPI:
    """The application serving `engine`; `bench`: a bench results dict for /bench (from the
    file the operator named at start-up; requests never name a path)."""
    app = FastAPI(title="decodelab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.exception_handler(ServeError)
    async def _serve_error(request, e: ServeError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException):
        msg = {404: f"no route {request.method} {request.url.path}", 405: f"method {request.method} not allowed on "
               f"{request.url.path}"}.get(e.status_code, str(e.detail))
        return JSONResponse(ServeError(e.status_code, msg).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        return JSONResponse(ServeError(500, f"internal error: {type(e).__name__}").body(), status_code=500)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(engine)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != engine.name:
            raise ServeError(404, f"model '{model_id}' is not served here; this server serves '{engine.name}'",
                             code="model_not_found")
        return _model_card(engine)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = parse(CompletionRequest, await _body(request, engine))
        return await _respond(request, engine, req.to_job(engine), req.stream, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = parse(ChatRequest, await _body(request, engine))
        return await _respond(request, engine, req.to_job(engine), req.stream, chat=True)

    @app.get("/decodelab/info")
    async def info():
        return JSONResponse(json.loads(json.dumps(engine.info(), default=repr)))

    @app.get("/health")
    async def health():
        return {"status": "shutting_down" if engine.closing else "ok", "instance": engine.instance,
                "active": engine.active, "served": engine.served}

    @app.get("/decodelab/bench")
    async def bench_file():
        if bench is None:
            raise ServeError(404, "this server was started without --bench RESULTS.json; choose a file on the page",
                             code="no_bench")
        return await asyncio.to_thread(_render_bench, bench)

    @app.post("/decodelab/bench/render")
    async def bench_render(request: Request):
        raw = await _body(request, engine, limit=max(engine.limits.max_body_bytes, 32 << 20))
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ServeError(400, f"not a bench results JSON: {e}") from None
        if not isinstance(data, dict) or "rows" not in data or "units" not in data:
            raise ServeError(400, "not a bench results JSON (no rows/units)")
        return await asyncio.to_thread(_render_bench, data)

    for route, page in PAGES.items():
        app.add_api_route(route, _page(page), methods=["GET"], include_in_schema=False)

    @app.get("/static/{name}")
    async def static(name: str):
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}  # a request only picks among these
        if name not in files:
            raise ServeError(404, f"no static file '{name}'")
        return FileResponse(files[name])

    return app


def _page(name: str):
    async def page():
        return FileResponse(STATIC / name, media_type="text/html")
    return page


def _model_card(engine: Engine) -> dict:
    return {"id": engine.name, "object": "model", "created": 0, "owned_by": "decodelab",
            "decodelab": {"family": "diffusion" if engine.diffusion else "causal", "draft": engine.draft_name}}


async def _body(request: Request, engine: Engine, limit: int | None = None) -> bytes:
    limit = limit or engine.limits.max_body_bytes
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise ServeError(413, f"the request body has {size} bytes; this server's limit is {limit}", code="too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ServeError(413, f"the request body exceeds this server's limit of {limit} bytes", code="too_large")
    return bytes(body)


async def _respond(request: Request, engine: Engine, job, stream: bool, chat: bool) -> Response:
    gen = engine.start(job)
    view = _View(engine, gen, chat)
    try:
        first = await _wait(request, gen)
    except BaseException:
        gen.cancel()
        raise
    if first is None:  # the client left while the request waited
        return Response(status_code=499)
    if isinstance(first, Failed):
        raise first.error
    if not stream:
        try:
            return await _collect(request, gen, view, first)
        finally:
            gen.cancel()
    return StreamingResponse(_sse(gen, view, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _wait(request: Request, gen: Generation, every: float = 0.5):
    """The next event, or None once the client has left (checked every `every` seconds while
    nothing is sent to it: a queued request, or a response built whole)."""
    while True:
        ev = await gen.next(poll=every)
        now = gen.loop.time()
        if now - gen.checked >= every:
            gen.checked = now
            if await request.is_disconnected():
                gen.cancel()
                return None
        if ev is not None:
            return ev


async def _collect(request: Request, gen: Generation, view: "_View", ev) -> Response:
    while True:
        if isinstance(ev, Failed):
            raise ev.error
        if isinstance(ev, Done):
            if ev.cancelled:
                raise ServeError(503, "the server shut down before the generation finished", code="shutting_down")
            return JSONResponse(view.final(ev, whole=True))
        view.add(ev)
        ev = await _wait(request, gen)
        if ev is None:
            return Response(status_code=499)


async def _sse(gen: Generation, view: "_View", ev):
    try:
        while True:
            if isinstance(ev, Failed):
                yield _event(ev.error.body())
                break
            if isinstance(ev, Done):
                if ev.cancelled:
                    yield _event(ServeError(503, "the server shut down before the generation finished",
                                            code="shutting_down").body())
                else:
                    yield _event(view.final(ev, whole=False))
                break
            yield _event(view.add(ev))
            try:
                ev = await gen.next()
            except ServeError as e:
                ev = Failed(e)
        yield b"data: [DONE]\n\n"
    finally:
        gen.cancel()  # the client left (the task is cancelled here) or the stream ended: stop the worker


def _event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _View:
    """One response in OpenAI's shapes: the text so far, logprobs, and decodelab's extension."""

    def __init__(self, engine: Engine, gen: Generation, chat: bool):
        self.engine, self.gen, self.chat = engine, gen, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.text = TextStream(engine.tokenizer, gen.job.stop)
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.steps: list[dict] = []
        self.role_sent = False

    def _head(self) -> dict:
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.engine.name}

    def add(self, c: Chunk) -> dict:
        """Record one step; return its stream chunk."""
        self.tokens += c.tokens
        if c.logprobs is not None:
            self.logprobs += c.logprobs
        delta = self.text.feed(c.tokens)
        ext = {"tokens": c.tokens, "pieces": [self.text.piece(t) for t in c.tokens]}
        if c.steps is not None:
            ext["trace"] = [self._step(s) for s in c.steps]
            self.steps += ext["trace"]
        if c.unmasked is not None:
            ext["unmasked"] = dict(c.unmasked, pieces=[self.text.piece(t) for t in c.unmasked["tokens"]])
        choice = {"index": 0, "finish_reason": None, "logprobs": self._logprobs(c.tokens, c.logprobs)}
        if self.chat:
            choice["delta"] = {"content": delta}
            if not self.role_sent:
                choice["delta"]["role"], self.role_sent = "assistant", True
        else:
            choice["text"] = delta
        return self._head() | {"choices": [choice], "decodelab": ext}

    def _step(self, s) -> dict:
        d = dataclasses.asdict(s)
        d["draft_pieces"] = [self.text.piece(t) for t in s.draft]
        return d

    def _logprobs(self, tokens: list[int], lps: list[float] | None):
        if lps is None:
            return None
        pieces = [self.text.piece(t) for t in tokens]
        if self.chat:
            return {"content": [{"token": p, "logprob": lp, "bytes": list(p.encode()), "top_logprobs": []}
                                for p, lp in zip(pieces, lps)]}
        return {"tokens": pieces, "token_logprobs": lps, "top_logprobs": None, "text_offset": None}

    def _finish(self, stats) -> str:
        job = self.gen.job
        if self.text.stopped:
            return "stop"
        eos = set(getattr(self.engine.model, "eos_token_ids", []) or [])
        if self.tokens and self.tokens[-1] in eos and not job.ignore_eos:
            return "stop"
        return "length" if stats.new_tokens >= job.max_new_tokens else "stop"

    def final(self, done: Done, whole: bool) -> dict:
        """The last stream chunk (whole=False) or the whole response (whole=True)."""
        stats, job = done.stats, self.gen.job
        rest = self.text.finish()
        usage = {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.new_tokens,
                 "total_tokens": stats.prompt_tokens + stats.new_tokens}
        elapsed = time.monotonic() - self.gen.started
        ext = {"method": job.method, "options": job.options, "stats": stats.as_dict(), "instance": self.engine.instance,
               "elapsed_s": round(elapsed, 4), "tokens_per_s": round(stats.new_tokens / elapsed, 2) if elapsed else None}
        finish = self._finish(stats)
        if whole:
            ext["tokens"] = self.tokens
            if job.trace:
                ext["trace"] = self.steps
            text = self.text.sent
            lps = self._logprobs(self.tokens, self.logprobs if job.logprobs else None)
            if self.chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": lps,
                          "finish_reason": finish}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "logprobs": lps, "finish_reason": finish}
                obj = "text_completion"
            choice["token_ids"] = self.tokens
            return {"id": self.id, "object": obj, "created": self.created, "model": self.engine.name,
                    "choices": [choice], "usage": usage, "decodelab": ext}
        choice = {"index": 0, "finish_reason": finish, "logprobs": None}
        if self.chat:
            choice["delta"] = {"content": rest} if rest else {}
        else:
            choice["text"] = rest
        return self._head() | {"choices": [choice], "usage": usage, "decodelab": ext}


def _render_bench(results: dict) -> dict:
    """A results dict as the bench page shows it: its markdown report and its plots (PNG, base64)."""
    import base64
    import tempfile

    from ..bench import plots, report

    try:
        md = report.markdown(results)
    except (KeyError, TypeError, ValueError) as e:
        raise ServeError(400, f"not a bench results JSON this version can read: {type(e).__name__}: {e}") from None
    images = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            paths = plots.render(results, Path(tmp))
        except Exception as e:  # noqa: BLE001  (a plot that cannot be drawn leaves the table)
            paths, md = [], md + f"\n\n(plots could not be drawn: {type(e).__name__}: {e})"
        for p in paths:
            images.append({"name": p.name, "png": base64.b64encode(p.read_bytes()).decode()})
    return {"markdown": md, "plots": images, "rows": len(results.get("rows", []))}

