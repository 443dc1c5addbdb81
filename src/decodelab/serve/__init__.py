"""decodelab serve: an OpenAI-compatible server with per-request decoding methods, and a
playground that shows how each token was produced (docs/serve.md).

    engine = Engine(decodelab.load("zoo:code-target"), draft=decodelab.load("zoo:code-draft"),
                    name="zoo:code-target")
    from decodelab.serve.server import run   # needs the `serve` extra (FastAPI, uvicorn)
    run(engine, port=8000)

Layers: `engine` (admission, worker threads, sessions; decodes only through decodelab.stream),
`protocol` (OpenAI fields -> a Job), `text` (streamed text and stop strings), `app` (routes, SSE),
`server` (uvicorn, graceful shutdown), `ray_serve` (N replicas behind one endpoint), `static/`
(the playground and bench pages).
"""
from .engine import Engine, Job, Limits, ServeError

__all__ = ["Engine", "Job", "Limits", "ServeError"]
