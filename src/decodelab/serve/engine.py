"""The serving engine: one loaded model (and draft), a bounded pool of worker threads, and the
bridge from `decodelab.stream()` (blocking, CPU-bound) to the event loop that answers HTTP.

Every request becomes a `Job` that `decodelab.stream()` decodes in a worker thread; stream() runs
each generation on adapters of its own (own KV cache, own counters), so concurrent jobs never
share decoding state. What learning methods remember lives in a `decodelab.State`: a job gets a
new one unless it names a session, whose State only jobs naming that session see, one at a time.

Admission is decided on the event loop (one thread, so the counts need no lock): at most
`max_concurrent` jobs run (the pool's threads) and `max_queue` more wait; beyond that a request
is refused at once with 429. A job's slot is freed when its worker stops, which happens at the
next step boundary after `Generation.cancel()` (client gone, time limit, shutdown).
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import api
from ..errors import DecodeLabError
from ..registry import all_methods, get
from ..state import State
from ..types import DecodeStats, StepTrace

log = logging.getLogger("decodelab.serve")


class ServeError(Exception):
    """An error answered as OpenAI does: HTTP `status` and {"error": {message, type, param, code}}."""

    TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
             409: "conflict_error", 413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
             503: "service_unavailable", 504: "timeout_error"}

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """What one server (one replica) accepts. Every bound is checked before a model runs."""

    max_prompt_tokens: int = 2048  # prompt tokens (after the chat template)
    max_tokens: int = 512  # max_tokens a request may ask for
    max_concurrent: int = 2  # generations decoding at once (worker threads)
    max_queue: int = 64  # admitted requests waiting for a worker
    request_timeout: float = 120.0  # seconds from admission to the last token
    max_sessions: int = 64  # learning-method sessions kept (least recently used dropped)
    max_body_bytes: int = 1 << 20  # request body size
    shutdown_grace: float = 10.0  # seconds running streams get to finish at shutdown

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < (0 if f.name == "max_queue" else 1e-9):
                raise DecodeLabError(f"{f.name} must be a positive number, got {v!r}")


@dataclass
class Job:
    """One request, in decodelab's terms (protocol.py maps the OpenAI fields to it)."""

    method: str
    max_new_tokens: int
    prompt: str | list[int] | None = None
    messages: list[dict] | None = None
    options: dict = field(default_factory=dict)  # sampling arguments and the method's options
    stop: list[str] | None = None
    ignore_eos: bool = False
    logprobs: bool = False
    trace: bool = False
    session: str | None = None


@dataclass
class Chunk:
    """What one decoding step committed."""

    tokens: list[int]
    logprobs: list[float] | None = None
    steps: list[StepTrace] | None = None  # the StepTraces recorded since the last chunk
    unmasked: dict | None = None  # diffusion: {"positions", "tokens"} the step unmasked, in commit order


@dataclass
class Done:
    stats: DecodeStats
    cancelled: bool = False


@dataclass
class Failed:
    error: ServeError


class Generation:
    """One admitted job seen from the event loop: its events, its deadline, and cancel()."""

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop, timeout: float, session: str | None):
        self.job, self.loop, self.session = job, loop, session
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.started = time.monotonic()
        self.deadline = loop.time() + timeout
        self.timeout = timeout
        self.checked = loop.time()  # when the client was last seen connected (app._wait)

    def emit(self, event) -> None:
        """From the worker thread."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()

    async def next(self, poll: float | None = None):
        """The next event; None when `poll` seconds pass first. Past the deadline the job is
        cancelled and a 504 raised."""
        remaining = self.deadline - self.loop.time()
        wait = remaining if poll is None else min(poll, remaining)
        try:
            return await asyncio.wait_for(self.queue.get(), max(wait, 0.0))
        except asyncio.TimeoutError:
            if poll is not None and self.loop.time() < self.deadline:
                return None
            self.cancel()
            raise ServeError(504, f"the request took longer than this server's limit of {self.timeout:g} s "
                                  "and was cancelled", code="timeout") from None

    def cancel(self) -> None:
        self.cancelled.set()


class Engine:
    """A loaded model (and draft) served under `limits`. Create it in any thread; call start()
    from the event loop that answers requests."""

    def __init__(self, model, *, draft=None, name: str | None = None, draft_name: str | None = None,
                 limits: Limits | None = None):
        self.model, self.draft = model, draft
        self.name = name or "model"
        self.draft_name = draft_name
        self.limits = limits or Limits()
        self.diffusion = getattr(model, "mask_id", None) is not None  # masked diffusion LMs have a mask token
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.pool = ThreadPoolExecutor(self.limits.max_concurrent, thread_name_prefix="decodelab-gen")
        self.active = 0  # admitted jobs, running or queued
        self.served = 0
        self.closing = False
        self._generations: set[Generation] = set()
        self._sessions: OrderedDict[str, State] = OrderedDict()
        self._busy: set[str] = set()
        self._ids = itertools.count()

    # -- what is served ------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return getattr(self.model, "tokenizer", None)

    @property
    def default_method(self) -> str:
        if not self.diffusion:
            return "greedy"
        names = [n for n, m in all_methods().items() if m.family == "diffusion"]
        if not names:
            raise ServeError(400, "this is a masked diffusion LM and no diffusion method is registered")
        return "llada" if "llada" in names else names[0]

    def usable(self, name: str) -> str | None:
        """None when this server can run method `name`, else why not."""
        m = get(name)
        if (m.family == "diffusion") != self.diffusion:
            return "needs a masked diffusion LM" if m.family == "diffusion" else "needs a causal LM"
        if m.draft and self.draft is None:
            return "needs a draft model (start the server with --draft)"
        missing = sorted(m.needs - self.model.capabilities)
        return f"needs model capability {', '.join(missing)}" if missing else None

    def info(self) -> dict:
        methods = {}
        for name, desc in api.methods().items():
            desc["unavailable"] = self.usable(name)
            methods[name] = desc
        return {"model": self.name, "draft": self.draft_name, "family": "diffusion" if self.diffusion else "causal",
                "default_method": self.default_method, "chat": bool(getattr(self.tokenizer, "chat_template", None)),
                "methods": methods, "limits": dataclasses.asdict(self.limits), "instance": self.instance,
                "load": {"active": self.active, "running": min(self.active, self.limits.max_concurrent),
                         "served": self.served}}

    # -- admission and the worker --------------------------------------------------------------
    def start(self, job: Job) -> Generation:
        """Admit `job` and hand it to the pool (call from the event loop). Raises ServeError
        503 while shutting down, 429 when running and queued jobs fill the limits, 409 when the
        job's session is in use."""
        lim = self.limits
        if self.closing:
            raise ServeError(503, "the server is shutting down", code="shutting_down")
        if self.active >= lim.max_concurrent + lim.max_queue:
            raise ServeError(429, f"server busy: {self.active} requests running or queued (limit "
                                  f"{lim.max_concurrent} running + {lim.max_queue} queued); retry later",
                             code="server_busy")
        state = self._checkout(job.session)
        gen = Generation(job, asyncio.get_running_loop(), lim.request_timeout, job.session)
        self.active += 1
        self._generations.add(gen)
        try:
            self.pool.submit(self._work, gen, state)
        except RuntimeError:  # the pool was shut down between the check and here
            self._finished(gen)
            raise ServeError(503, "the server is shutting down", code="shutting_down") from None
        return gen

    def _checkout(self, session: str | None) -> State:
        if session is None:
            return State()  # a cold State of its own: nothing learnt leaks between clients
        if session in self._busy:
            raise ServeError(409, f"session '{session}' is in use by another request; requests on one session run "
                                  "one at a time", param="decoding.session", code="session_busy")
        state = self._sessions.pop(session, None) or State()
        self._sessions[session] = state  # most recently used last
        while len(self._sessions) > self.limits.max_sessions:
            old = next((s for s in self._sessions if s not in self._busy and s != session), None)
            if old is None:
                break
            del self._sessions[old]
        self._busy.add(session)
        return state

    def _finished(self, gen: Generation) -> None:
        if gen in self._generations:
            self._generations.discard(gen)
            self.active -= 1
            self.served += 1
            self._busy.discard(gen.session)

    def _work(self, gen: Generation, state: State) -> None:
        """Worker thread: decode gen.job with decodelab.stream(), emitting Chunk, then Done or Failed."""
        try:
            if gen.cancelled.is_set():  # cancelled while queued
                gen.emit(Done(DecodeStats(), cancelled=True))
                return
            gen.emit(self._decode(gen, state))
        except ServeError as e:
            gen.emit(Failed(e))
        except DecodeLabError as e:
            gen.emit(Failed(ServeError(400, str(e))))
        except Exception as e:  # noqa: BLE001  (a bug must not take the server down; it is logged)
            log.exception("generation failed")
            gen.emit(Failed(ServeError(500, f"internal error: {type(e).__name__}: {e}")))
        finally:
            try:
                gen.loop.call_soon_threadsafe(self._finished, gen)
            except RuntimeError:
                pass

    def _decode(self, gen: Generation, state: State) -> Done:
        job = gen.job
        stats = DecodeStats()
        lps = [] if job.logprobs else None
        steps = [] if job.trace else None
        chunks = api.stream(self.model, job.prompt, job.method, messages=job.messages,
                            draft=self.draft if get(job.method).draft else None, max_new_tokens=job.max_new_tokens,
                            ignore_eos=job.ignore_eos, stop=job.stop, state=state, stats=stats, logprobs=lps,
                            trace=steps, **job.options)
        try:
            if stats.prompt_tokens > self.limits.max_prompt_tokens:  # stream() has tokenized, not decoded
                raise ServeError(400, f"the prompt has {stats.prompt_tokens} tokens; this server's limit is "
                                      f"{self.limits.max_prompt_tokens}", param="prompt", code="prompt_too_long")
            n_lp = n_steps = 0
            for chunk in chunks:
                tokens = list(chunk)
                pos = getattr(chunk, "positions", None)
                unmasked = None if pos is None else {"positions": list(pos), "tokens": list(chunk.tokens)}
                gen.emit(Chunk(tokens, None if lps is None else lps[n_lp:n_lp + len(tokens)],
                               None if steps is None else steps[n_steps:], unmasked))
                n_lp += len(tokens)
                n_steps = len(steps) if steps is not None else 0
                if gen.cancelled.is_set():
                    return Done(stats, cancelled=True)
        finally:
            chunks.close()
        return Done(stats)

    # -- shutdown ------------------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        """Refuse new requests; running ones get `shutdown_grace` seconds, then are cancelled."""
        if self.closing:
            return
        self.closing = True
        loop = asyncio.get_running_loop()
        loop.call_later(self.limits.shutdown_grace, self.cancel_all)

    def cancel_all(self) -> None:
        for gen in list(self._generations):
            gen.cancel()

    def close(self) -> None:
        self.closing = True
        self.cancel_all()
        self.pool.shutdown(wait=True, cancel_futures=False)
