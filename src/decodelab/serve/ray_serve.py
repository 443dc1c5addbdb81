"""The same application on Ray Serve: N replicas, each one Engine (its own model copy, worker
threads and limits), behind one OpenAI-compatible HTTP endpoint. Ray's router spreads requests
over the replicas and sends a replica at most as many as its Engine admits (max_concurrent +
max_queue); every response names the replica that served it (`decodelab.instance`)."""
from __future__ import annotations

import time

from ..errors import DecodeLabError


def _asgi(spec: dict, bench: dict | None):
    """Builds a replica's application, on the replica (Ray calls it once per replica)."""
    from .app import create_app
    from .cli import build_engine

    return create_app(build_engine(spec), bench)


def application(spec: dict, replicas: int, bench: dict | None = None, replica_cpus: float = 1.0):
    """The Ray Serve application: `replicas` copies of the decodelab app behind one endpoint."""
    from ray import serve

    if replicas < 1:
        raise DecodeLabError(f"--replicas must be at least 1, got {replicas}")
    lim = spec["limits"]

    def build():  # a plain function: Ray calls a builder only when it is one (not a functools.partial)
        return _asgi(spec, bench)

    @serve.deployment(name="decodelab", num_replicas=replicas, ray_actor_options={"num_cpus": replica_cpus},
                      max_ongoing_requests=lim["max_concurrent"] + lim["max_queue"])
    @serve.ingress(build)
    class Replica:
        pass

    return Replica.bind()


def start(spec: dict, address: str, replicas: int, host: str = "127.0.0.1", port: int = 8000,
          bench: dict | None = None) -> None:
    """Connect to (or start, for 'local') Ray, and run the application on Serve's HTTP proxy."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise DecodeLabError("--ray needs Ray Serve: pip install 'decodelab[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(spec, replicas, bench), name="decodelab", route_prefix="/", blocking=False)


def deploy(spec: dict, address: str, replicas: int, host: str = "127.0.0.1", port: int = 8000,
           bench: dict | None = None) -> int:
    """`decodelab serve --ray`: serve until interrupted, then shut the application down."""
    from ray import serve

    start(spec, address, replicas, host, port, bench)
    print(f"decodelab: serving {spec['name']} on http://{host}:{port} with {replicas} Ray Serve replica(s)",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0
