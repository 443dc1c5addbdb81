"""State a method carries across generations, owned by the caller.

Token Recycling's adjacency matrix and ADED's tri-gram matrix learn from every generation. That
memory lives in a `State` the caller creates and passes in (`generate(..., state=st)`): the same
State over several calls carries it (as the bench does over one row's prompts, and a server will
per session); without one, every generation starts cold. Nothing is kept at module level, so two
generations never see each other's state by accident.

    st = decodelab.State()
    for prompt in prompts:
        decodelab.generate(model, prompt, "token_recycling", state=st)

A State belongs to the model it was first used with (the same weights, any adapter over them);
using it with another model raises. Each method keeps its own slots in it, so one State can serve
a session that switches methods.
"""
from __future__ import annotations

import weakref
from typing import Callable, Hashable

from .errors import DecodeLabError


class State:
    def __init__(self):
        self._slots: dict[Hashable, object] = {}
        self._model: weakref.ref | None = None

    def slot(self, target, key: Hashable, make: Callable[[], object], reset: bool = False):
        """The object stored under `key` (a method puts its name in it); `make()` builds it when
        there is none yet, or afresh when `reset`."""
        self._bind(target)
        if reset or key not in self._slots:
            self._slots[key] = make()
        return self._slots[key]

    def clear(self) -> None:
        """Forget everything: the next generation starts cold."""
        self._slots.clear()

    def __len__(self) -> int:
        return len(self._slots)

    def _bind(self, target) -> None:
        weights = getattr(target, "model", None)  # the weights every adapter over them shares
        if weights is None:
            return
        if self._model is None or self._model() is None:
            self._model = weakref.ref(weights)
        elif self._model() is not weights:
            raise DecodeLabError("this State was built on another model; use one State per model")
