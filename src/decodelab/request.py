"""The one object every method's `run(req, config)` and every loop takes: what to decode, with
what, and where the counts go."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .core.sampling import SamplingConfig
from .models.base import CausalLM
from .state import State
from .types import DecodeStats, StepTrace


@dataclass(frozen=True, eq=False)
class Request:
    """One generation. `target` and `draft` are adapters with caches of their own for this
    generation (api.stream makes them), so two requests never share a KV cache."""

    target: CausalLM
    prompt: torch.Tensor  # [T] token ids, T >= 1
    max_new_tokens: int
    sampling: SamplingConfig
    stats: DecodeStats  # the loops append what each step committed
    rng: torch.Generator | None = None  # the only source of randomness; None when greedy
    stops: frozenset[int] = frozenset()  # token ids that end the generation (emitted, then stop)
    draft: CausalLM | None = None
    state: State = field(default_factory=State)  # memory carried across generations (the caller's)
    logprobs: list[float] | None = None  # when a list: each committed token's log p under the target
    trace: list[StepTrace] | None = None  # when a list: how each step produced its tokens
    sequences: list[list[int]] | None = None  # when a list: a multi-output method's outputs, best first

    @property
    def greedy(self) -> bool:
        return not self.sampling.do_sample

    def memory(self, key, make, reset: bool = False):
        """This method's slot in the caller's State (a fresh State when the caller passed none)."""
        return self.state.slot(self.target, key, make, reset)
