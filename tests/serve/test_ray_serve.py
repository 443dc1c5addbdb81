"""The same application on Ray Serve with two local replicas: the openai client tests pass through
Ray's proxy, and concurrent requests are served by both replicas. Slow (Ray starts in ~30 s)."""
from __future__ import annotations

import concurrent.futures
import dataclasses

import pytest

import decodelab
from decodelab.serve import Limits
from serve.serve_helpers import CHAT_TEMPLATE, openai_client

pytestmark = pytest.mark.slow
MODEL = "zoo:code-target"
PROMPT = "def add(a, b):\n"


@pytest.fixture(scope="module")
def ray_url():
    import ray
    from ray import serve

    from decodelab.serve import ray_serve

    port = _free_port()
    spec = {"model": MODEL, "draft": "zoo:code-draft", "name": MODEL, "device": "cpu", "dtype": "float32",
            "trust_remote_code": False, "chat_template": CHAT_TEMPLATE, "threads": 1,
            "limits": dataclasses.asdict(Limits(max_tokens=128))}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray_serve.start(spec, "local", replicas=2, port=port)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_client_through_ray_equals_generate(ray_url, zoo_models):
    target, draft = zoo_models
    client = openai_client(ray_url)
    assert [m.id for m in client.models.list().data] == [MODEL]
    ref = decodelab.generate(target, PROMPT, max_new_tokens=24)
    for method in ("greedy", "sps"):
        resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24,
                                         extra_body={"decoding": {"method": method}})
        assert resp.to_dict()["choices"][0]["token_ids"] == ref.tokens
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, stream=True,
                                            extra_body={"decoding": {"method": "sps", "gamma": 3}}))
    assert "".join(c.choices[0].text for c in chunks) == target.tokenizer.decode(ref.tokens, skip_special_tokens=True)
    assert chunks[-1].to_dict()["decodelab"]["stats"]["tau"] > 1
    messages = [{"role": "user", "content": "def fib(n):"}]
    chat = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
    assert chat.to_dict()["choices"][0]["token_ids"] == decodelab.generate(target, messages=messages,
                                                                           max_new_tokens=12).tokens


def test_bad_request_through_ray_is_the_same_clear_error(ray_url):
    import openai

    with pytest.raises(openai.BadRequestError, match="unknown method 'nope'"):
        openai_client(ray_url).completions.create(model=MODEL, prompt=PROMPT,
                                                  extra_body={"decoding": {"method": "nope"}})


def test_concurrent_requests_are_spread_over_both_replicas(ray_url, zoo_models):
    target = zoo_models[0]
    client = openai_client(ray_url)
    prompts = [f"def f{i}(x):\n    return x * {i}\n" for i in range(16)]

    def one(p):
        d = client.completions.create(model=MODEL, prompt=p, max_tokens=32).to_dict()
        return d["decodelab"]["instance"], d["choices"][0]["token_ids"]

    refs = [decodelab.generate(target, p, max_new_tokens=32).tokens for p in prompts]
    seen = set()
    for _ in range(3):  # Ray's proxy may learn of a new replica a moment after the app reports ready
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(one, prompts))
        assert [ids for _, ids in got] == refs
        seen |= {inst for inst, _ in got}
        if len(seen) == 2:
            break
    assert len(seen) == 2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
