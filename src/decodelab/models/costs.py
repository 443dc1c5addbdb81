"""Forward cost curves: the wall time of one forward of a chain of n = 1..N_MAX new tokens after a
prefix of L tokens already in the cache, for a model on its backend, device and thread count.

What a draft can gain depends on what a longer forward costs: on a GPU or for a model whose
weights dwarf the CPU's cache a step of 5 tokens costs little more than one (memory-bound), while a
small model on a CPU pays almost linearly (compute- or overhead-bound; zoo:code-target: 1 token
4.5 ms, 8 tokens 6.9 ms on torch; 0.35 and 1.8 ms on llama.cpp). The `auto` draft sizes
(core/costs.py) read this curve.

The prefix matters as well: attention reads every cached position for every new token, so a
forward's cost grows with n * L. On llama.cpp (1 thread, no flash attention, which exactness
rules out) zoo:code-target's 6-token forward costs 1.7 ms after 64 tokens and 4.6 ms after 1000,
its 1-token forward 0.43 and 0.97 ms: a curve measured after a short prefix alone makes long
drafts look cheap on long prompts. So the curve is measured after CONTEXT tokens and after FAR
tokens (or what the model's context leaves), and `curve(lm, context=L)` interpolates linearly in
the cells attended, L + n rounded up to the adapter's `kv_pad` (llama.cpp attends over its cache
in blocks of 256 cells: code-target's 1-token forward costs 0.42 ms after 64-250 tokens, 0.59 ms
after 258-510 and 0.78 ms after 520; torch: 1), between the two (extrapolating past FAR; never
below the short curve).

Measured once per (adapter kind, weights, dtype, device, threads, host CPU; on llama.cpp also the
build, models/llamacpp.build) and cached twice: on the adapter (`costs`, a dict its fresh() copies
share) and on disk under $DECODELAB_CACHE (default ~/.cache/decodelab)/costs/, so later processes
skip the measurement. Each point is the fastest of REPEATS forwards, the lengths interleaved: the
machine's other work only ever adds time, and a curve cached from a busy minute would steer every
later run (a median of 5 had cached zoo:code-target's 1-token forward at 0.8 ms, against 0.45 ms
measured quiet; on this shared machine a whole second of measuring can run 2x slow). So a process
that reads a cached curve first measures the 1-token point again: when it runs more than QUIETER
faster than the curve says, the curve is measured again and the faster of the two kept at every
point. The host CPU (`host()`: its model name, instruction set and cache sizes) is part of the key:
a cache directory outlives the machine it was measured on (a home directory moved to another host, a
container image), and the faster-of-two merge would otherwise mix two machines' curves (seen here:
zoo:code-target-l's 105 MB of weights stream from memory on a host with a 32 MB last-level cache and
stay in the 480 MB one of another, and the two curves differ in shape, not by a factor).

Shape switches. llama.cpp reuses its compute graph between forwards of one shape and rebuilds it
when the number of tokens changes: zoo:code-target's 1-token forward costs 0.35-0.45 ms in a run
of 1-token forwards and 0.55-0.85 ms right after a 6-token one (1 thread). The curve holds the
cost within a run of one size (what a step costs when the draft length stays put) and `switch`
the median extra cost of the first forward after another size; AutoLength charges it to the
steps that change the size.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from .base import prefill

N_MAX = 16  # longest chain measured: drafts longer than 15 tokens are not chosen automatically
CONTEXT = 64  # prefix length of the first curve
FAR = 512  # prefix length of the second (at most what the model's context leaves)
REPEATS = 5
QUIETER = 0.15  # a cached curve is measured again when that check runs this much faster
_VERSION = 4  # 4: the host CPU is part of the key


def curve(lm, n_max: int = N_MAX, context: int = CONTEXT) -> list[float]:
    """Seconds per forward of n chain tokens after `context` cached tokens, index n (index 0 is
    0.0), up to n_max or what the model's context allows beyond CONTEXT."""
    points = _points(lm, n_max)
    short, far = points["seconds"], points.get("far")
    n = min(n_max + 1, len(short))
    if not far or context <= CONTEXT:
        return short[:n]
    pad = getattr(lm, "kv_pad", 1)
    out = [0.0]
    for k in range(1, n):  # the attention reads the cells of the prefix and the new tokens, in blocks of pad
        near, at, back = (_cells(c + k, pad) for c in (CONTEXT, context, far["context"]))
        w = (at - near) / (back - near) if back > near else 0.0
        out.append(short[k] + w * max(far["seconds"][k] - short[k], 0.0))
    return out


def _cells(n: int, pad: int) -> int:
    return -(-n // pad) * pad


def _points(lm, n_max: int) -> dict:
    """{"seconds": the curve after CONTEXT tokens, "far": {"context", "seconds"} or absent}: from the
    adapter's memo, the disk cache, or measured."""
    room = (lm.max_length or CONTEXT + n_max) - CONTEXT
    n_max = max(1, min(n_max, room))
    key = _key(lm)
    memo = getattr(lm, "costs", None)
    if memo is not None and key in memo and len(memo[key]["seconds"]) > n_max:
        return memo[key]
    points = _load(key, n_max)
    if points is not None and _quieter(lm, points):  # measured on a busier machine: again, keeping the best
        points = _merge(points, measure(lm, len(points["seconds"]) - 1))
        _save(key, points)
    elif points is None:
        points = measure(lm, n_max)
        _save(key, points)
    if memo is not None:
        memo[key] = points
    return points


def switch(lm) -> float:
    """Seconds a forward costs on top of the curve when the previous forward had another number of
    tokens (llama.cpp reuses its compute graph only between forwards of one shape; ~0 on torch)."""
    return _points(lm, N_MAX).get("switch", 0.0)


def clock(lm, kind: str, draft=None) -> dict:
    """Where AutoLength keeps what its clock measures for drafts of `kind` on this model (and draft
    model): each draft length's recent step times beyond the curve. A dict shared by the adapter's
    fresh() copies, at this thread count, kept for the process only. The curve leaves out the
    Python around a step and what a forward costs inside a generation, which the clock measures:
    every generation after the first starts from it. A new dict each call for a model without a
    cache key (nothing says two such models are alike)."""
    memo, keys = getattr(lm, "costs", None), [_key(m) for m in (lm, draft) if m is not None]
    if memo is None or None in keys:
        return {}
    return memo.setdefault(("clock", kind, *keys), {})


def measure(lm, n_max: int) -> dict:
    """Time the forwards on a fresh adapter (its own cache), tokens cycling through the vocabulary,
    after CONTEXT tokens and, where the model's context has room, after FAR."""
    far = min(FAR, (lm.max_length or FAR + n_max) - n_max)
    if getattr(lm, "cache_key", None) is not None:
        print(f"decodelab: measuring the forward cost of {_name(lm)} for 1..{n_max} tokens, once", file=sys.stderr)
    m = lm.fresh(needs=frozenset())
    seconds, switches = _timed(m, CONTEXT, n_max)
    points = {"seconds": seconds, "switch": statistics.median(switches) if switches else 0.0}
    if far >= 2 * CONTEXT:
        points["far"] = {"context": far, "seconds": _timed(m, far, n_max)[0]}
    return points


def _quieter(lm, points: dict) -> bool:
    """Whether the machine runs this model's 1-token forward faster now than the cached curve says
    (by more than QUIETER): the curve's own 1-token measurement, taken again when a process first
    reads a curve from disk, so that a curve measured in a busy minute does not steer every later
    run."""
    seconds, _ = _timed(lm.fresh(needs=frozenset()), CONTEXT, 1)
    return seconds[1] < (1.0 - QUIETER) * points["seconds"][1]


def _merge(old: dict, new: dict) -> dict:
    """Two measurements of one curve: the faster of the two at every point (the machine's other
    work only adds time); the newer switch cost."""
    out = {"seconds": [min(a, b) for a, b in zip(old["seconds"], new["seconds"])], "switch": new.get("switch", 0.0)}
    if "far" in old and "far" in new and old["far"]["context"] == new["far"]["context"]:
        out["far"] = {"context": new["far"]["context"],
                      "seconds": [min(a, b) for a, b in zip(old["far"]["seconds"], new["far"]["seconds"])]}
    elif "far" in new:
        out["far"] = new["far"]
    return out


def _timed(m, context: int, n_max: int) -> tuple[list[float], list[float]]:
    """([0, seconds of a forward of 1..n_max tokens after `context` tokens, in a run of forwards of
    that size: the fastest of REPEATS rounds], [what the first forward of each run cost more than
    the run's fastest, the previous forward having had another size: the switch cost]). Each round
    takes the sizes in turn, so a busy machine's drift hits them alike."""
    ids = (torch.arange(context + n_max) * 7 + 3) % max(m.vocab_size - 3, 1) + 3  # [context + n_max]
    m.reset()
    prefill(m, ids[:context])
    steady: dict[int, list[float]] = {n: [] for n in range(1, n_max + 1)}
    switches: list[float] = []
    for rep in range(REPEATS + 1):  # the first round warms up
        for n in range(1, n_max + 1):
            runs = []
            for _ in range(3):  # the first after another size, then two of the same size
                t = time.perf_counter()
                m.forward(ids[context:context + n], torch.arange(context, context + n))
                runs.append(time.perf_counter() - t)
                m.truncate(context)
            if rep:
                steady[n].append(min(runs[1:]))
                switches.append(max(runs[0] - min(runs[1:]), 0.0))
    return [0.0] + [min(steady[n]) for n in range(1, n_max + 1)], switches


def _name(lm) -> str:
    return str(getattr(lm, "cache_key", None) or type(lm).__name__).split("|")[0]


def _key(lm) -> str | None:
    """What the cost depends on: the adapter's own key (weights, dtype, device), the threads, the host CPU."""
    own = getattr(lm, "cache_key", None)
    if own is None:
        return None
    threads = os.environ.get("DECODELAB_NUM_THREADS") or torch.get_num_threads()
    text = f"{_VERSION}|{type(lm).__name__}|{own}|threads={threads}|n={CONTEXT}|host={host()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def host() -> str:
    """The host CPU as far as a forward's cost goes: its model name, a digest of its instruction-set
    flags and its cache sizes (Linux: /proc/cpuinfo and sysfs), and the logical CPUs; elsewhere what
    the platform module says."""
    info: dict[str, str] = {}  # the first CPU's lines of /proc/cpuinfo
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    flags = hashlib.sha256(" ".join(sorted(info.get("flags", "").split())).encode()).hexdigest()[:8]
    caches = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            caches.append(f"L{(index / 'level').read_text().strip()}{(index / 'type').read_text().strip()[0]}="
                          f"{(index / 'size').read_text().strip()}")
        except OSError:
            pass
    return "|".join([name, flags, ",".join(caches), f"cpus={os.cpu_count()}"])


def _path(key: str) -> Path:
    return Path(os.environ.get("DECODELAB_CACHE", Path.home() / ".cache" / "decodelab")) / "costs" / f"{key}.json"


def _load(key: str | None, n_max: int) -> dict | None:
    if key is None:
        return None
    try:
        points = json.loads(_path(key).read_text())
        short, far = points["seconds"], points.get("far")
        ok = _curve_ok(short, n_max + 1) and (far is None or (
            isinstance(far.get("context"), int) and far["context"] > CONTEXT and _curve_ok(far["seconds"], len(short))))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return points if ok else None


def _curve_ok(points, n: int) -> bool:
    return isinstance(points, list) and len(points) >= n and all(isinstance(x, (int, float)) for x in points)


def _save(key: str | None, points: dict) -> None:
    if key is None:
        return
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(points))
        os.replace(tmp, path)  # whole or not at all
    except OSError:
        pass  # a read-only cache only costs a measurement per process
