"""One module per method; importing this package imports (and so registers) every module in it.

A method's `run(target, prompt, max_new_tokens, *, config, sampling, draft, rng, stops, stats)`
returns an iterator of committed token chunks, built on one of the family loops.
"""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
