"""Streams advanced in turn, for the registry-wide independence tests of every family."""
from __future__ import annotations


def interleave(streams) -> list[list[int]]:
    """Advance the streams one step each in turn until all end; each one's tokens."""
    got, live = [[] for _ in streams], [True] * len(streams)
    while any(live):
        for i, s in enumerate(streams):
            if live[i]:
                chunk = next(s, None)
                live[i] = chunk is not None
                got[i] += chunk or []
    return got
