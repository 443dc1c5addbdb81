"""Public value types: what decoding returns, and the draft types methods exchange."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .core.tree import Draft, TokenTree

__all__ = ["DecodeOutput", "DecodeStats", "Draft", "TokenTree"]


@dataclass
class DecodeStats:
    """Counts, never times (the bench times). tau = tokens committed per target forward, bonus
    included, so plain autoregressive decoding has tau = 1.0."""

    new_tokens: int = 0
    prompt_tokens: int = 0
    target_forwards: int = 0  # decode forwards; prefill is counted apart
    target_tokens_scored: int = 0
    draft_forwards: int = 0
    draft_tokens_scored: int = 0
    prefill_forwards: int = 0
    committed: list[int] = field(default_factory=list)  # tokens committed by each target forward

    @property
    def tau(self) -> float:
        return sum(self.committed) / len(self.committed) if self.committed else 0.0

    @property
    def tokens_per_target_forward(self) -> float:
        """Mean tokens scored per target forward: the target compute budget per step."""
        return self.target_tokens_scored / self.target_forwards if self.target_forwards else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(tau=round(self.tau, 4), tokens_per_target_forward=round(self.tokens_per_target_forward, 4))
        return d


@dataclass
class DecodeOutput:
    tokens: list[int]  # generated ids only, EOS included when it ended the generation
    text: str | None  # decoded tokens, when the model has a tokenizer
    stats: DecodeStats
    method: str = ""
    logprobs: list[float] | None = None  # with logprobs=True: log p of each token under the target
