"""Run the application with uvicorn, on this machine (`run`) or in a thread (`Background`, for
tests and notebooks). At shutdown (Ctrl-C, SIGTERM) new requests are refused with 503, running
streams get `shutdown_grace` seconds to finish, and those still running are then cancelled: each
gets a last error event and [DONE], and its worker stops at the next step."""
from __future__ import annotations

import threading

import uvicorn

from .app import create_app
from .engine import Engine


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: Engine):
        super().__init__(config)
        self.engine = engine

    async def shutdown(self, sockets=None) -> None:
        self.engine.begin_shutdown()
        await super().shutdown(sockets)


def _config(engine: Engine, host: str, port: int, bench: dict | None, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(create_app(engine, bench), host=host, port=port, log_level=log_level, lifespan="off",
                          timeout_graceful_shutdown=engine.limits.shutdown_grace + 5)


def run(engine: Engine, host: str = "127.0.0.1", port: int = 8000, bench: dict | None = None,
        log_level: str = "info") -> None:
    """Serve until interrupted; then finish or cancel the streams and stop the workers."""
    server = _Server(_config(engine, host, port, bench, log_level), engine)
    try:
        server.run()
    finally:
        engine.close()


class Background:
    """The server in a thread on a free loopback port: `with Background(engine) as url: ...`."""

    def __init__(self, engine: Engine, bench: dict | None = None, host: str = "127.0.0.1", port: int = 0):
        self.engine = engine
        self.server = _Server(_config(engine, host, port, bench, "warning"), engine)
        self.thread = threading.Thread(target=self.server.run, name="decodelab-serve", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            threading.Event().wait(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.engine.limits.shutdown_grace + 15)
        self.engine.close()

