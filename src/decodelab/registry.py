"""The method registry: @register(name, ...) and the checks that refuse impossible requests."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator

from .errors import DecodeLabError

FAMILIES = ("autoregressive", "speculative", "diffusion")
LOSSLESS = ("greedy", "sampling", None)
MODES = ("greedy", "sample")


@dataclass(frozen=True)
class Method:
    name: str
    family: str
    lossless: str | None  # "greedy" | "sampling" | None
    config: type  # frozen keyword-only dataclass
    run: Callable[..., Iterator[list[int]]]
    needs: frozenset[str]  # capabilities the target must declare
    draft: bool  # needs a draft model
    modes: tuple[str, ...]  # "greedy" and/or "sample"
    summary: str
    # methods that keep state per target model across generations (Token Recycling, ADED):
    # forget(target) drops it, so the next generation starts cold (the bench does so per repeat)
    forget: Callable[[object], None] | None = None

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "lossless": self.lossless,
                "needs": sorted(self.needs) + (["draft model"] if self.draft else []),
                "modes": list(self.modes), "summary": self.summary}

    def make_config(self, **kwargs):
        names = [f.name for f in dataclasses.fields(self.config)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise DecodeLabError(f"method '{self.name}' has no option(s) {', '.join(unknown)}; "
                                 f"its options: {', '.join(names) or '(none)'}")
        return self.config(**kwargs)


_METHODS: dict[str, Method] = {}


def register(name: str, *, family: str, config: type, lossless: str | None, needs=(), draft=False,
             modes=MODES, forget=None):
    """Register `run(target, prompt, max_new_tokens, *, ctx)` under `name`. `forget(target)`:
    for methods that keep state per target across generations, drop that state.

    The first paragraph of the run function's module docstring becomes the method's summary.
    """
    if family not in FAMILIES or lossless not in LOSSLESS or not set(modes) <= set(MODES):
        raise ValueError(f"bad registration for {name}")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"{name}: config must be a dataclass")

    def deco(run):
        import sys

        doc = (sys.modules[run.__module__].__doc__ or "").strip().split("\n\n")[0]
        _METHODS[name] = Method(name, family, lossless, config, run, frozenset(needs), draft,
                                tuple(modes), " ".join(doc.split()), forget)
        return run

    return deco


def get(name: str) -> Method:
    _load_builtin()
    if name not in _METHODS:
        raise DecodeLabError(f"unknown method '{name}'; known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def all_methods() -> dict[str, Method]:
    _load_builtin()
    return dict(sorted(_METHODS.items()))


def _load_builtin() -> None:
    import importlib

    importlib.import_module("decodelab.methods")  # importing registers every built-in method
