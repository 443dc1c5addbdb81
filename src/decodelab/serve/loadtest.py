"""A bounded load test of a running decodelab server (loopback or your own hosts only):

    python -m decodelab.serve.loadtest --url http://127.0.0.1:8000 --model zoo:code-target \
        --draft zoo:code-draft --requests 32 --max-tokens 32 --methods greedy,sps,pld

Sends `requests` streaming completions at once, each with its own prompt and a lossless method,
and checks every stream is complete (a final chunk with usage, then [DONE]) and equals its own
greedy output, computed here with decodelab.generate on the same weights (so nothing was lost or
mixed between streams). Then sends bad requests, each of which must get a 4xx with an OpenAI-style
error, and one more good request, which must succeed. Prints p50/p95 latency and time to first
token, total tokens/s, and a JSON summary; exits 1 if any check failed. Bounded: a fixed number
of requests, each with a timeout.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import time

BAD = [  # (what, path, body); each must be answered with a 4xx and an error message
    ("invalid JSON", "/v1/completions", b"{"),
    ("unknown field", "/v1/completions", {"prompt": "x", "foo": 1}),
    ("unknown method", "/v1/completions", {"prompt": "x", "decoding": {"method": "nope"}}),
    ("bad option", "/v1/completions", {"prompt": "x", "decoding": {"method": "sps", "gamma": -1}}),
    ("unknown option", "/v1/completions", {"prompt": "x", "decoding": {"method": "pld", "bogus": 1}}),
    ("max_tokens too large", "/v1/completions", {"prompt": "x", "max_tokens": 10**9}),
    ("negative temperature", "/v1/completions", {"prompt": "x", "temperature": -1}),
    ("wrong model", "/v1/completions", {"prompt": "x", "model": "not-this-one"}),
    ("empty prompt", "/v1/completions", {"prompt": ""}),
    ("n = 3", "/v1/completions", {"prompt": "x", "n": 3}),
    ("token id out of range", "/v1/completions", {"prompt": [10**9]}),
    ("chat without messages", "/v1/chat/completions", {"messages": []}),
]


def prompts(n: int) -> list[str]:
    names = ["total", "count", "scale", "merge", "split", "parse", "clean", "check"]
    return [f"def {names[i % len(names)]}_{i}(items, k={i}):\n    " for i in range(n)]


def one_stream(http, url: str, model: str, prompt: str, method: str, max_tokens: int, timeout: float) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "temperature": 0,
            "decoding": {"method": method}}
    t0 = time.perf_counter()
    first, ids, final, done, error = None, [], None, False, None
    try:
        with http.stream("POST", url + "/v1/completions", json=body, timeout=timeout) as r:
            if r.status_code != 200:
                r.read()
                return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                obj = json.loads(line[6:])
                if "error" in obj:
                    error = obj["error"]["message"]
                    continue
                first = first or time.perf_counter()
                if "usage" in obj:
                    final = obj
                else:
                    ids += obj["decodelab"]["tokens"]
    except Exception as e:  # noqa: BLE001  (a failed request is a finding, not a crash of the test)
        error = f"{type(e).__name__}: {e}"
    end = time.perf_counter()
    return {"ids": ids, "latency": end - t0, "ttft": (first or end) - t0, "complete": done and final is not None,
            "usage": final and final["usage"], "instance": final and final["decodelab"]["instance"], "error": error}


def run(url: str, model_name: str, model, draft, n: int, max_tokens: int, methods: list[str],
        timeout: float = 300.0) -> dict:
    import httpx2 as httpx

    import decodelab
    from decodelab.registry import get

    ps = prompts(n)
    refs = [decodelab.generate(model, p, max_new_tokens=max_tokens).tokens for p in ps]
    usable = [m for m in methods if not get(m).draft or draft is not None]
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    with httpx.Client(limits=limits) as http:
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda i: one_stream(http, url, model_name, ps[i], usable[i % len(usable)],
                                                         max_tokens, timeout), range(n)))
        wall = time.perf_counter() - t0
        bad = []
        for what, path, body in BAD:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = http.post(url + path, content=content, headers={"content-type": "application/json"}, timeout=60)
            msg = r.json().get("error", {}).get("message") if r.headers.get("content-type", "").startswith(
                "application/json") else None
            bad.append({"what": what, "status": r.status_code, "message": msg, "ok": 400 <= r.status_code < 500
                        and bool(msg)})
        after = http.post(url + "/v1/completions", json={"model": model_name, "prompt": ps[0],
                                                         "max_tokens": max_tokens}, timeout=timeout)
        still = after.status_code == 200 and after.json()["choices"][0]["token_ids"] == refs[0]
    ok = [r for r, ref in zip(results, refs) if r.get("complete") and not r.get("error") and r["ids"] == ref]
    lat = sorted(r["latency"] for r in results if "latency" in r)
    ttft = sorted(r["ttft"] for r in results if "ttft" in r)
    tokens = sum(len(r.get("ids", [])) for r in results)
    return {"requests": n, "methods": usable, "max_tokens": max_tokens, "complete_and_equal_to_greedy": len(ok),
            "failed": [{"i": i, "error": r.get("error"), "complete": r.get("complete")}
                       for i, (r, ref) in enumerate(zip(results, refs)) if r not in ok],
            "latency_s": {"p50": _q(lat, 0.5), "p95": _q(lat, 0.95), "max": lat[-1] if lat else None},
            "ttft_s": {"p50": _q(ttft, 0.5), "p95": _q(ttft, 0.95)}, "wall_s": round(wall, 3),
            "total_tokens": tokens, "tokens_per_s": round(tokens / wall, 1) if wall else None,
            "instances": sorted({r["instance"] for r in results if r.get("instance")}),
            "bad_requests": bad, "bad_answered": sum(b["ok"] for b in bad), "still_serving": still,
            "passed": len(ok) == n and all(b["ok"] for b in bad) and still}


def _q(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return round(statistics.quantiles(xs, n=100, method="inclusive")[int(q * 100) - 1] if len(xs) > 1 else xs[0], 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m decodelab.serve.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="the served model, loaded here too for the greedy references")
    p.add_argument("--draft", help="the server's draft model (enables methods that need one)")
    p.add_argument("--name", help="the model id the server serves (default --model)")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--methods", default="greedy,sps,pld", help="lossless methods, used in turn")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 256:
        p.error("--requests must be in [1, 256] (a bounded test)")
    import torch

    import decodelab

    torch.set_num_threads(1)
    model = decodelab.load(args.model)
    draft = decodelab.load(args.draft) if args.draft else None
    out = run(args.url, args.name or args.model, model, draft, args.requests, args.max_tokens,
              args.methods.split(","), args.timeout)
    print(f"{out['complete_and_equal_to_greedy']}/{out['requests']} streams complete and equal to their greedy "
          f"output; latency p50 {out['latency_s']['p50']} s, p95 {out['latency_s']['p95']} s; time to first token "
          f"p50 {out['ttft_s']['p50']} s; {out['total_tokens']} tokens in {out['wall_s']} s = {out['tokens_per_s']} "
          f"tokens/s; {out['bad_answered']}/{len(out['bad_requests'])} bad requests answered with a clear 4xx; "
          f"still serving: {out['still_serving']}")
    print(json.dumps(out, indent=1))
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
