"""State a method keeps per target model across generations (Token Recycling's adjacency matrix,
ADED's tri-gram matrix).

Keyed weakly by the adapter's underlying model (``target.model``, else the adapter itself), so
the state lives exactly as long as the model, and every adapter over the same weights shares it.
Inside ``with scope(name):`` a separate state is kept under that name: the bench gives every row
its own, so one row never drafts from what another row learnt on the same prompt.
"""
from __future__ import annotations

import contextlib
import contextvars
import weakref
from typing import Callable, Hashable

_SCOPE: contextvars.ContextVar = contextvars.ContextVar("decodelab_state_scope", default=None)


@contextlib.contextmanager
def scope(name: Hashable):
    """Use (and build) the state of scope ``name`` inside this block."""
    token = _SCOPE.set(name)
    try:
        yield
    finally:
        _SCOPE.reset(token)


class PerModel:
    def __init__(self):
        self._state: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()

    def get(self, target, key: Hashable, make: Callable[[], object], reset: bool = False):
        """The state stored under ``key`` for ``target``'s model; ``make()`` builds it when
        there is none yet or when ``reset``."""
        per_model = self._state.setdefault(_owner(target), {})
        key = (_SCOPE.get(), key)
        if reset or key not in per_model:
            per_model[key] = make()
        return per_model[key]

    def forget(self, target) -> None:
        """Drop everything stored for ``target``'s model, in every scope: the next ``get`` starts cold."""
        self._state.pop(_owner(target), None)


def _owner(target):
    return getattr(target, "model", target)
