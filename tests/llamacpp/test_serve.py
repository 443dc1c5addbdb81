"""`decodelab serve --backend llamacpp`: the server's worker threads decode concurrent requests on
llama.cpp contexts taken from and given back to the weights' pool; every stream, whatever its
method, equals the backend's greedy output for its prompt."""
import argparse
import concurrent.futures

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")

import decodelab  # noqa: E402
from decodelab.models.llamacpp import LlamaCppLM  # noqa: E402
from decodelab.serve.cli import add_commands, build_engine, spec_from  # noqa: E402
from decodelab.serve.server import Background  # noqa: E402
from serve.serve_helpers import stream_ids  # noqa: E402


def test_concurrent_streams_on_the_backend_equal_its_greedy(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", "zoo:code-target", "--draft", "zoo:code-draft", "--backend",
                              "llamacpp", "--max-concurrent", "4", "--max-tokens", "64"])
    engine = build_engine(spec_from(args))
    assert isinstance(engine.model, LlamaCppLM) and isinstance(engine.draft, LlamaCppLM)
    prompts = [f"def f{i}(x):\n    return x + {i}\n\ndef g{i}(" for i in range(8)]
    refs = [decodelab.generate(engine.model, p, max_new_tokens=24).tokens for p in prompts]
    methods = ["greedy", "sps", "pld", "token_recycling"]

    def one(url, i):
        return stream_ids(url, {"prompt": prompts[i], "max_tokens": 24, "stream": True,
                                "decoding": {"method": methods[i % 4]} | ({"gamma": 2} if i % 4 == 1 else {})})

    with Background(engine) as url, concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: one(url, i), range(8)))
    assert got == refs
