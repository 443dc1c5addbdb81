"""The pages and their JSON (the browser tests are in test_playground_browser.py), the serve
command's refusals, and a clean shutdown of a real `decodelab serve` process mid-stream."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx2 as httpx
import pytest

from decodelab.cli import main


def test_pages_and_static_files(server):
    url = server[0]
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "/static/playground.js" in page.text
    assert httpx.get(url + "/bench").status_code == 200
    js = httpx.get(url + "/static/playground.js")
    assert js.status_code == 200 and "decoding" in js.text
    assert httpx.get(url + "/static/nothing.js").status_code == 404


def test_info_lists_methods_with_why_one_is_unavailable(server, zoo_models):
    info = httpx.get(server[0] + "/decodelab/info").json()
    assert info["model"] == "zoo:code-target" and info["draft"] == "zoo:code-draft" and info["chat"]
    assert info["methods"]["sps"]["unavailable"] is None
    assert [o["name"] for o in info["methods"]["sps"]["options"]] == ["gamma", "schedule"]
    assert info["default_method"] == "greedy" and info["limits"]["max_tokens"] == 256
    for name, m in info["methods"].items():
        if m["family"] == "diffusion":
            assert m["unavailable"] == "needs a masked diffusion LM"


def test_bench_results_render(server, tiny_dirs, tmp_path):
    url = server[0]
    r = httpx.get(url + "/decodelab/bench")
    assert r.status_code == 404 and "--bench" in r.json()["error"]["message"]
    t, d = tiny_dirs["gpt2"]
    assert main(["bench", "--model", t, "--workload", "synthetic", "--method", "greedy", "--limit", "1", "--repeats",
                 "1", "--warmup", "0", "--max-new-tokens", "4", "--threads", "1", "--out", str(tmp_path),
                 "--no-progress", "--no-peers"]) == 0
    r = httpx.post(url + "/decodelab/bench/render", content=(tmp_path / "results.json").read_bytes(), timeout=60)
    assert r.status_code == 200
    body = r.json()
    assert "| greedy |" in body["markdown"] and body["rows"] >= 1
    assert r.json()["plots"] and all(p["png"] for p in body["plots"])
    bad = httpx.post(url + "/decodelab/bench/render", content=b'{"rows": 1}')
    assert bad.status_code == 400 and "not a bench results JSON" in bad.json()["error"]["message"]


@pytest.mark.parametrize("argv, msg", [
    (["--max-tokens", "0"], "max_tokens must be a positive number"),
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--chat-template", "/nonexistent/t.jinja"], "cannot read the chat template"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--bench", "/nonexistent/results.json"], "not found"),
])
def test_serve_refuses_bad_arguments_before_loading(argv, msg, capsys):
    assert main(["serve", "--model", "zoo:code-target", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_sigterm_mid_stream_ends_the_stream_cleanly(tmp_path):
    """A real `decodelab serve`: SIGTERM while a stream runs: the stream finishes or gets a last
    error event and [DONE] within the grace period; new requests are refused; the process exits."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "decodelab.cli", "serve", "--model", "zoo:code-target",
                             "--port", str(port), "--shutdown-grace", "1", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_up(url, proc)
        body = {"prompt": "def f(x):\n", "max_tokens": 240, "stream": True, "decoding": {"ignore_eos": True}}
        events = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as s:
            lines = s.iter_lines()
            events.append(next(lines))
            proc.send_signal(signal.SIGTERM)
            events += [line for line in lines if line]
        assert events[-1] == "data: [DONE]"
        last = json.loads(events[-2][6:])
        assert last.get("usage") or last["error"]["code"] == "shutting_down"
        assert proc.wait(timeout=30) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url, proc, timeout=90.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"decodelab serve exited: {proc.stdout.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("decodelab serve did not start")
