"""SpS: speculative sampling with a draft model (Leviathan et al. 2023, "Fast Inference from
Transformers via Speculative Decoding", arXiv 2211.17192; Chen et al. 2023, "Accelerating Large
Language Model Decoding with Speculative Sampling", arXiv 2302.01318).

Notation: p = target, q = draft (both processed by the same SamplingConfig), gamma = draft length.
The draft model proposes gamma tokens autoregressively from q; the speculative loop scores the
chain in one target forward and accepts x_i with probability min(1, p_i(x_i) / q_i(x_i)),
resampling from norm(max(0, p_i - q_i)) at the first rejection, or a bonus token from
p_{gamma+1} when all are accepted. Greedy: accept while the draft equals the target's argmax.
Lossless for greedy and for sampling.

Schedules: "constant" keeps gamma (default 5, as gpt-fast); "heuristic" is transformers'
assisted-generation rule: gamma + 2 after a fully accepted draft, gamma - 1 (at least 1) otherwise.
Deviation: the draft does not run the gamma-th forward that only re-syncs its cache; the next
propose() forwards the committed tokens the draft has not seen (models.base.sync).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.sampling import SamplingConfig, choose, probs_from_logits
from ..core.tree import Draft, TokenTree
from ..errors import DecodeLabError
from ..loops import speculative
from ..models.base import CausalLM, sync
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class SpSConfig:
    gamma: int = 5
    schedule: str = "constant"  # "constant" | "heuristic"

    def __post_init__(self):
        if self.gamma < 1:
            raise DecodeLabError(f"gamma must be >= 1, got {self.gamma}")
        if self.schedule not in ("constant", "heuristic"):
            raise DecodeLabError(f"schedule must be 'constant' or 'heuristic', got '{self.schedule}'")


class ChainDrafter:
    """Drafts a chain of up to `gamma` tokens from a draft model, recording q when sampling."""

    def __init__(self, draft: CausalLM, sampling: SamplingConfig, rng: torch.Generator | None, gamma: int):
        self.draft, self.sampling, self.rng, self.gamma = draft, sampling, rng, gamma
        draft.reset()

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        n = min(self.gamma, max_depth)
        tokens, qs = [int(ctx[-1])], []
        if n == 0:
            return Draft(TokenTree.chain(tokens))
        logits = sync(self.draft, ctx)  # [V]
        for i in range(n):
            if self.sampling.do_sample:
                qs.append(probs_from_logits(logits, self.sampling))
            tokens.append(int(choose(logits, self.sampling, self.rng)))
            if i < n - 1:
                pos = torch.tensor([len(ctx) + i])
                logits = self.draft.forward(torch.tensor([tokens[-1]]), pos).logits[-1]
        q = torch.cat([torch.stack(qs), torch.zeros(1, qs[0].shape[-1])]) if qs else None  # [n+1, V]
        return Draft(TokenTree.chain(tokens), q)

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        pass


class HeuristicChainDrafter(ChainDrafter):
    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        drafted = len(draft.tree) - 1
        if drafted:
            self.gamma = self.gamma + 2 if len(path) - 1 == drafted else max(1, self.gamma - 1)


@register("sps", family="speculative", config=SpSConfig, lossless="sampling", draft=True)
def run(target, prompt, max_new_tokens, *, config, sampling, draft, rng, stops, stats):
    cls = HeuristicChainDrafter if config.schedule == "heuristic" else ChainDrafter
    drafter = cls(draft, sampling, rng, config.gamma)
    return speculative.decode(target, drafter, prompt, max_new_tokens, sampling, rng, stops, stats)
