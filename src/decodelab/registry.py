"""The method registry: @register(name, ...) and what each method declares about itself.

A method is one function `run(req: Request, config) -> Iterator[list[int]]` (the token chunks each
step commits) plus what it declares here: its family, losslessness, the capabilities it needs,
its config dataclass (an `options.Options`), and for the bench its fixed-budget rule and its
transformers peer row. The API refuses an impossible request from these declarations before
anything runs; the bench and the CLI read them instead of guessing.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

from .errors import DecodeLabError
from .options import Options

FAMILIES = ("autoregressive", "speculative", "diffusion")
LOSSLESS = ("greedy", "sampling", None)
MODES = ("greedy", "sample")
PEERS = ("hf:greedy", "hf:assisted", "hf:prompt-lookup")

# fixed_budget B (the most tokens the target scores per forward, root included) -> the options
# that make the method draft at most B - 1 tokens, given the options the user set
BudgetRule = Callable[[int, dict], dict]


@dataclass(frozen=True)
class Method:
    name: str
    family: str
    lossless: str | None  # "greedy" | "sampling" | None
    config: type  # frozen keyword-only Options dataclass
    run: Callable[..., Iterator[list[int]]]
    needs: frozenset[str]  # capabilities the target must declare
    draft: bool  # needs a draft model
    modes: tuple[str, ...]  # "greedy" and/or "sample"
    summary: str
    budget: BudgetRule | None = None  # how the method runs at a fixed target budget
    peer: str | None = None  # the transformers generate() row doing the same job
    history: bool = False  # applies the context-reading processors (penalties, DRY) per token context

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "lossless": self.lossless,
                "needs": sorted(self.needs) + (["draft model"] if self.draft else []),
                "modes": list(self.modes), "summary": self.summary, "peer": self.peer,
                "fixed_budget": self.budget is not None, "history": self.history,
                "options": self.config.describe()}

    def make_config(self, **kwargs):
        names = [f.name for f in dataclasses.fields(self.config)]
        try:
            kwargs = self.config.resolve_aliases(kwargs)  # mirostat_tau -> tau
        except DecodeLabError as e:
            raise DecodeLabError(f"{self.name}: {e}") from None
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise DecodeLabError(f"method '{self.name}' has no option(s) {', '.join(unknown)}; "
                                 f"its options: {', '.join(names + sorted(self.config.aliases)) or '(none)'}")
        try:
            return self.config(**kwargs)
        except DecodeLabError as e:
            raise DecodeLabError(f"{self.name}: {e}") from None

    def budget_options(self, b: int, given: dict) -> dict:
        """The config options for fixed budget `b`; refuses options that would contradict it."""
        if self.budget is None:
            raise DecodeLabError(f"method '{self.name}' drafts nothing, so it cannot run at a fixed budget")
        opts = self.budget(b, given)
        clash = sorted(set(opts) & set(given))
        if clash:
            raise DecodeLabError(f"give '{self.name}' either fixed_budget or {', '.join(clash)}, not both")
        return opts


_METHODS: dict[str, Method] = {}


def draft_size(field: str) -> BudgetRule:
    """The budget rule of a method whose `field` counts the tokens drafted per step."""
    return lambda b, given: {field: b - 1}


def register(name: str, *, family: str, config: type, lossless: str | None, needs=(), draft=False,
             modes=MODES, budget: BudgetRule | str | None = None, peer: str | None = None,
             history: bool | None = None):
    """Register `run(req, config)` under `name`.

    budget: for drafting methods, the fixed-budget rule (a callable, or the name of the config
    field that counts drafted tokens); every speculative method must have one. peer: the
    transformers row (one of PEERS) the bench times the method against. history: the method
    applies the sampling processors that read the context (penalties, DRY) with every token's own
    context; the API refuses those options for methods that do not. Speculative methods do by
    default (their loop verifies every draft node against its own context). The first paragraph
    of the run function's module docstring becomes the method's summary.
    """
    if family not in FAMILIES or lossless not in LOSSLESS or not set(modes) <= set(MODES):
        raise ValueError(f"bad registration for {name}")
    if not (dataclasses.is_dataclass(config) and issubclass(config, Options)):
        raise TypeError(f"{name}: config must be an Options dataclass")
    if family == "speculative" and budget is None:
        raise ValueError(f"{name}: a speculative method must declare its fixed-budget rule")
    if peer is not None and peer not in PEERS:
        raise ValueError(f"{name}: peer must be one of {PEERS}")
    if isinstance(budget, str) and budget not in {f.name for f in dataclasses.fields(config)}:
        raise ValueError(f"{name}: budget field '{budget}' is not an option of {config.__name__}")
    rule = draft_size(budget) if isinstance(budget, str) else budget
    if family == "speculative":  # the speculative loop rolls the KV cache back to the accepted path
        needs = tuple(needs) + ("rewind",)

    def deco(run):
        doc = (sys.modules[run.__module__].__doc__ or "").strip().split("\n\n")[0]
        _METHODS[name] = Method(name, family, lossless, config, run, frozenset(needs), draft,
                                tuple(modes), " ".join(doc.split()), rule, peer,
                                family == "speculative" if history is None else history)
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
