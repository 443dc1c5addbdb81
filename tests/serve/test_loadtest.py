"""The bounded load test (decodelab.serve.loadtest) against a server in this process: 32
concurrent streams with distinct prompts and mixed lossless methods, each complete and equal to
its own greedy output; 12 bad requests each answered with a clear 4xx; the server still serving.
Slow: about a minute on two busy cores."""
from __future__ import annotations

import pytest

from decodelab.serve import loadtest
from serve.serve_helpers import start

pytestmark = pytest.mark.slow


def test_32_concurrent_streams_and_bad_requests(zoo_models):
    target, draft = zoo_models
    bg = start(target, draft, max_tokens=64, max_concurrent=2, max_queue=64)
    try:
        out = loadtest.run(bg.url, "zoo:code-target", target, draft, n=32, max_tokens=32,
                           methods=["greedy", "sps", "pld"])
    finally:
        bg.stop()
    assert out["complete_and_equal_to_greedy"] == 32, out["failed"]
    assert out["bad_answered"] == len(loadtest.BAD) >= 10 and out["still_serving"] and out["passed"]
    assert out["latency_s"]["p50"] <= out["latency_s"]["p95"] and out["tokens_per_s"] > 0
