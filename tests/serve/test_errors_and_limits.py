"""Bad input and load: every bad request gets one OpenAI-style error with the right status, and
the server keeps serving; limits on concurrency, time and size; a client that leaves frees its
slot; concurrent requests never mix."""
from __future__ import annotations

import concurrent.futures
import json
import time

import httpx2 as httpx
import pytest

import decodelab
from serve.serve_helpers import openai_client, start, stream_ids

P = "def add(a, b):\n"


def _post(url, path, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url + path, content=data, headers={"content-type": "application/json"}, timeout=60, **kw)


BAD = [  # (name, path, body, status, words the message must contain)
    ("not json", "/v1/completions", b"{not json", 400, "not valid JSON"),
    ("not an object", "/v1/completions", b"[1, 2]", 400, "JSON object"),
    ("no prompt", "/v1/completions", {"max_tokens": 4}, 400, "'prompt' is required"),
    ("unknown field", "/v1/completions", {"prompt": P, "temprature": 0.5}, 400, "unknown field 'temprature'"),
    ("unknown method", "/v1/completions", {"prompt": P, "decoding": {"method": "nope"}}, 400, "unknown method 'nope'"),
    ("unknown option", "/v1/completions", {"prompt": P, "decoding": {"method": "sps", "gama": 3}}, 400,
     "no option(s) gama"),
    ("option out of bounds", "/v1/completions", {"prompt": P, "decoding": {"method": "sps", "gamma": 1000}}, 400,
     "gamma must be an integer in [1, 128]"),
    ("option of the wrong type", "/v1/completions", {"prompt": P, "decoding": {"method": "sps", "gamma": "x"}}, 400,
     "gamma"),
    ("sampling option in decoding", "/v1/completions", {"prompt": P, "decoding": {"temperature": 0.5}}, 400,
     "standard field"),
    ("max_tokens over the limit", "/v1/completions", {"prompt": P, "max_tokens": 10_000}, 400,
     "exceeds this server's limit of 64"),
    ("max_tokens zero", "/v1/completions", {"prompt": P, "max_tokens": 0}, 400, "max_tokens"),
    ("temperature out of range", "/v1/completions", {"prompt": P, "temperature": 3}, 400, "temperature"),
    ("model not served", "/v1/completions", {"prompt": P, "model": "gpt-4"}, 404, "model 'gpt-4' is not served"),
    ("n > 1", "/v1/completions", {"prompt": P, "n": 2}, 400, "n must be 1"),
    ("top logprobs", "/v1/completions", {"prompt": P, "logprobs": 3}, 400, "logprobs=0"),
    ("empty prompt", "/v1/completions", {"prompt": ""}, 400, "empty"),
    ("several prompts", "/v1/completions", {"prompt": ["a", "b"]}, 400, "one prompt per request"),
    ("prompt too long", "/v1/completions", {"prompt": "x = 1\n" * 35}, 400, "this server's limit is 128"),
    ("token id outside the vocabulary", "/v1/completions", {"prompt": [1, 10**9]}, 400, "outside the vocabulary"),
    ("diffusion method on a causal LM", "/v1/completions", {"prompt": P, "decoding": {"method": "llada"}}, 400,
     "llada"),
    ("bad session id", "/v1/completions", {"prompt": P, "decoding": {"session": "../etc"}}, 400, "session"),
    ("stop too many", "/v1/completions", {"prompt": P, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("chat without messages", "/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("chat bad role", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
    ("chat without a template", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 400,
     "no chat template"),
    ("body too large", "/v1/completions", {"prompt": "x" * 70_000}, 413, "limit is 65536"),
]


@pytest.fixture(scope="module")
def strict(zoo_models):
    """The zoo pair (the target without a chat template) under small limits."""
    target = decodelab.load("zoo:code-target")
    bg = start(target, zoo_models[1], max_tokens=64, max_prompt_tokens=128, max_body_bytes=65536,
               max_concurrent=2, max_queue=2)
    yield bg.url, target
    bg.stop()


@pytest.mark.parametrize("name, path, body, status, words", BAD, ids=[b[0] for b in BAD])
def test_bad_request_gets_one_clear_error(strict, name, path, body, status, words):
    if name == "diffusion method on a causal LM" and "llada" not in decodelab.methods():
        pytest.skip("no diffusion method registered in this checkout")
    r = _post(strict[0], path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and err["type"]
    assert set(err) == {"message", "type", "param", "code"}


def test_routes_and_verbs_are_openai_style_errors(strict):
    r = httpx.get(strict[0] + "/v1/nothing")
    assert r.status_code == 404 and "no route" in r.json()["error"]["message"]
    r = httpx.get(strict[0] + "/v1/completions")
    assert r.status_code == 405 and r.json()["error"]["message"]
    r = httpx.get(strict[0] + "/static/..%2Fengine.py")
    assert r.status_code == 404


def test_after_all_bad_requests_the_server_still_serves(strict):
    for _, path, body, _, _ in BAD:
        _post(strict[0], path, body)
    r = _post(strict[0], "/v1/completions", {"prompt": P, "max_tokens": 8})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8
    assert httpx.get(strict[0] + "/health").json()["active"] == 0


def test_openai_client_raises_the_servers_error(strict):
    import openai

    client = openai_client(strict[0])
    with pytest.raises(openai.BadRequestError, match="unknown method 'nope'"):
        client.completions.create(model="zoo:code-target", prompt=P, extra_body={"decoding": {"method": "nope"}})
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt=P)


def _slow(max_tokens=200):
    return {"prompt": P, "max_tokens": max_tokens, "stream": True, "decoding": {"ignore_eos": True}}


@pytest.fixture
def slow_steps(monkeypatch):
    """Each decoding step takes at least 50 ms (200 steps: 10 s), so that a test can act while a
    generation runs, whatever the machine's speed."""
    from decodelab.serve import engine

    real = engine.api.stream

    def slow(*args, **kwargs):
        chunks = real(*args, **kwargs)

        def paced():
            try:
                for chunk in chunks:
                    time.sleep(0.05)
                    yield chunk
            finally:
                chunks.close()
        return paced()

    monkeypatch.setattr(engine.api, "stream", slow)


def _wait_idle(url, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if httpx.get(url + "/health").json()["active"] == 0:
            return True
        time.sleep(0.05)
    return False


def test_busy_server_answers_429_and_a_client_that_leaves_frees_its_slot(zoo_models, slow_steps):
    bg = start(zoo_models[0], max_tokens=200, max_concurrent=1, max_queue=0)
    try:
        with httpx.Client(timeout=60) as http:
            with http.stream("POST", bg.url + "/v1/completions", json=_slow()) as r:
                assert r.status_code == 200
                lines = r.iter_lines()  # held: dropping the iterator would close the stream
                next(lines)  # the first step arrived: the one slot is taken
                busy = http.post(bg.url + "/v1/completions", json={"prompt": P, "max_tokens": 4})
                assert busy.status_code == 429 and "server busy" in busy.json()["error"]["message"]
            # the stream is closed mid-generation (9 s of it left): its worker stops at the next step
            assert _wait_idle(bg.url, 3)
            ok = http.post(bg.url + "/v1/completions", json={"prompt": P, "max_tokens": 4})
            assert ok.status_code == 200
            assert http.get(bg.url + "/health").json()["served"] == 2
    finally:
        bg.stop()


def test_request_time_limit(zoo_models, slow_steps):
    bg = start(zoo_models[0], max_tokens=200, request_timeout=0.3)
    try:
        r = _post(bg.url, "/v1/completions", {"prompt": P, "max_tokens": 200, "decoding": {"ignore_eos": True}})
        assert r.status_code == 504 and "limit of 0.3 s" in r.json()["error"]["message"]
        with httpx.stream("POST", bg.url + "/v1/completions", json=_slow(), timeout=60) as s:
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and "timeout" in json.loads(events[-2][6:])["error"]["type"]
        assert _wait_idle(bg.url, 3)
    finally:
        bg.stop()


def test_session_in_use_is_409(zoo_models, slow_steps):
    bg = start(zoo_models[0], max_tokens=200)
    try:
        body = _slow() | {"decoding": {"ignore_eos": True, "session": "s1"}}
        with httpx.stream("POST", bg.url + "/v1/completions", json=body, timeout=60) as s:
            lines = s.iter_lines()  # held: dropping the iterator would close the stream
            next(lines)
            r = _post(bg.url, "/v1/completions", {"prompt": P, "max_tokens": 4, "decoding": {"session": "s1"}})
            assert r.status_code == 409 and "in use" in r.json()["error"]["message"]
        assert _wait_idle(bg.url, 3)
        r = _post(bg.url, "/v1/completions", {"prompt": P, "max_tokens": 4, "decoding": {"session": "s1"}})
        assert r.status_code == 200
    finally:
        bg.stop()


def test_concurrent_streams_each_get_their_own_greedy_output(server):
    """8 concurrent streams with distinct prompts and mixed methods: none lost or mixed."""
    url, target, _ = server
    prompts = [f"def f{i}(x):\n    return x + {i}\n\ndef g{i}(" for i in range(8)]
    methods = ["greedy", "sps", "pld", "token_recycling"]
    refs = [decodelab.generate(target, p, max_new_tokens=20).tokens for p in prompts]

    def one(i):
        body = {"prompt": prompts[i], "max_tokens": 20, "stream": True, "decoding": {"method": methods[i % 4]}}
        return stream_ids(url, body)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(8)))
    assert got == refs


def test_a_non_streaming_client_that_leaves_frees_its_slot(zoo_models, slow_steps):
    bg = start(zoo_models[0], max_tokens=200, max_concurrent=1, max_queue=0)
    try:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.5 s of a 10 s generation
            httpx.post(bg.url + "/v1/completions", json=_slow() | {"stream": False}, timeout=0.5)
        assert _wait_idle(bg.url, 3)
        assert _post(bg.url, "/v1/completions", {"prompt": P, "max_tokens": 2}).status_code == 200
    finally:
        bg.stop()
