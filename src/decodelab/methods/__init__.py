"""One module per method; importing this package registers them all.

A method's `run(target, prompt, max_new_tokens, *, config, sampling, draft, rng, stops, stats)`
returns an iterator of committed token chunks, built on one of the family loops.
"""
from . import beam, greedy, sample, sps  # noqa: F401
