"""Forward cost curves: the wall time of one forward of a chain of n = 1..N_MAX new tokens after a
CONTEXT-token prefix, for a model on its backend, device and thread count.

What a draft can gain depends on what a longer forward costs: on a GPU or for a model whose
weights dwarf the CPU's cache a step of 5 tokens costs little more than one (memory-bound), while a
small model on a CPU pays almost linearly (compute- or overhead-bound; zoo:code-target: 1 token
4.5 ms, 8 tokens 6.9 ms on torch; 0.35 and 1.8 ms on llama.cpp). The `auto` draft sizes
(core/costs.py) read this curve.

Measured once per (adapter kind, weights, dtype, device, threads) and cached twice: on the adapter
(`costs`, a dict its fresh() copies share) and on disk under $DECODELAB_CACHE (default
~/.cache/decodelab)/costs/, so later processes skip the measurement. Each point is the median of
REPEATS forwards, the lengths interleaved so that a busy machine's drift hits them alike.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from .base import prefill

N_MAX = 16  # longest chain measured: drafts longer than 15 tokens are not chosen automatically
CONTEXT = 64  # prefix length the forwards attend to
REPEATS = 5
_VERSION = 1


def curve(lm, n_max: int = N_MAX) -> list[float]:
    """Seconds per forward of n chain tokens, index n (index 0 is 0.0), up to n_max or what the
    model's context allows beyond CONTEXT."""
    room = (lm.max_length or CONTEXT + n_max) - CONTEXT
    n_max = max(1, min(n_max, room))
    key = _key(lm)
    memo = getattr(lm, "costs", None)
    if memo is not None and key in memo and len(memo[key]) > n_max:
        return memo[key][: n_max + 1]
    points = _load(key, n_max)
    if points is None:
        points = measure(lm, n_max)
        _save(key, points)
    if memo is not None:
        memo[key] = points
    return points[: n_max + 1]


def measure(lm, n_max: int) -> list[float]:
    """Time the forwards on a fresh adapter (its own cache), tokens cycling through the vocabulary."""
    if getattr(lm, "cache_key", None) is not None:
        print(f"decodelab: measuring the forward cost of {_name(lm)} for 1..{n_max} tokens, once", file=sys.stderr)
    m = lm.fresh(needs=frozenset())
    ids = (torch.arange(CONTEXT + n_max) * 7 + 3) % max(lm.vocab_size - 3, 1) + 3  # [CONTEXT + n_max]
    prefill(m, ids[:CONTEXT])
    times: dict[int, list[float]] = {n: [] for n in range(1, n_max + 1)}
    for rep in range(REPEATS + 1):  # the first round warms up
        for n in range(1, n_max + 1):
            t = time.perf_counter()
            m.forward(ids[CONTEXT:CONTEXT + n], torch.arange(CONTEXT, CONTEXT + n))
            dt = time.perf_counter() - t
            m.truncate(CONTEXT)
            if rep:
                times[n].append(dt)
    return [0.0] + [statistics.median(times[n]) for n in range(1, n_max + 1)]


def _name(lm) -> str:
    return str(getattr(lm, "cache_key", None) or type(lm).__name__).split("|")[0]


def _key(lm) -> str | None:
    """What the cost depends on: the adapter's own key (weights, dtype, device), the threads."""
    own = getattr(lm, "cache_key", None)
    if own is None:
        return None
    threads = os.environ.get("DECODELAB_NUM_THREADS") or torch.get_num_threads()
    text = f"{_VERSION}|{type(lm).__name__}|{own}|threads={threads}|n={CONTEXT}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _path(key: str) -> Path:
    return Path(os.environ.get("DECODELAB_CACHE", Path.home() / ".cache" / "decodelab")) / "costs" / f"{key}.json"


def _load(key: str | None, n_max: int) -> list[float] | None:
    if key is None:
        return None
    try:
        points = json.loads(_path(key).read_text())["seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = isinstance(points, list) and len(points) > n_max and all(isinstance(x, (int, float)) for x in points)
    return [float(x) for x in points] if ok else None


def _save(key: str | None, points: list[float]) -> None:
    if key is None:
        return
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"seconds": points}))
        os.replace(tmp, path)  # whole or not at all
    except OSError:
        pass  # a read-only cache only costs a measurement per process
