"""Public value types: what decoding returns, and the draft types methods exchange."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .core.tree import Draft, TokenTree

__all__ = ["DecodeOutput", "DecodeStats", "Draft", "StepTrace", "TokenTree"]


@dataclass
class StepTrace:
    """How one step produced its tokens, for a UI or an analysis (generate(trace=True)).

    `tokens` = what the step committed; the first `accepted` of them were drafted and accepted,
    the rest came from the target itself (the bonus token; every token of a non-drafting method).
    `draft` / `parents` = the draft tree below the root, in node order (parent -1 = the root, the
    last committed token), so the rejected drafts are the nodes not on `path` (the accepted nodes).
    """

    tokens: list[int]
    accepted: int = 0
    draft: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    path: list[int] = field(default_factory=list)


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
    unmasked: list[int] = field(default_factory=list)  # diffusion: positions unmasked after each forward
    forwarded_tokens: int = 0  # tokens forwarded through the target, prefill included (a cached step forwards fewer)
    # Methods in which the draft model also emits tokens the target never checks (model switching:
    # EAD) count here the emitted tokens the target itself chose; the bench's target share is this
    # over new_tokens. None: not counted (the target chose or verified every token).
    target_emitted: int | None = None

    @property
    def tau(self) -> float:
        return sum(self.committed) / len(self.committed) if self.committed else 0.0

    @property
    def tokens_per_target_forward(self) -> float:
        """Mean tokens scored per target forward: the target compute budget per step."""
        return self.target_tokens_scored / self.target_forwards if self.target_forwards else 0.0

    @property
    def nfe(self) -> int:
        """Forward passes of the target, prefill included (the diffusion literature's NFE)."""
        return self.target_forwards + self.prefill_forwards

    @property
    def tokens_per_forward(self) -> float:
        """Tokens committed per forward pass: positions unmasked (diffusion) or tokens committed
        (the other families) over NFE."""
        n = sum(self.unmasked) if self.unmasked else sum(self.committed)
        return n / self.nfe if self.nfe else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(tau=round(self.tau, 4), tokens_per_target_forward=round(self.tokens_per_target_forward, 4),
                 nfe=self.nfe, tokens_per_forward=round(self.tokens_per_forward, 4))
        return d


@dataclass
class DecodeOutput:
    tokens: list[int]  # generated ids only, EOS included when it ended the generation
    text: str | None  # decoded tokens, when the model has a tokenizer
    stats: DecodeStats
    method: str = ""
    logprobs: list[float] | None = None  # with logprobs=True: log p of each token under the target
    trace: list[StepTrace] | None = None  # with trace=True: how each step produced its tokens
    sequences: list[list[int]] | None = None  # several-output methods (beams, drafts): all, best first
