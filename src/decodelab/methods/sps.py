"""SpS: speculative sampling with a draft model (Leviathan et al. 2023, "Fast Inference from
Transformers via Speculative Decoding", arXiv 2211.17192; Chen et al. 2023, "Accelerating Large
Language Model Decoding with Speculative Sampling", arXiv 2302.01318).

Notation: p = target, q = draft (both processed by the same SamplingConfig), gamma = draft length.
The draft model proposes gamma tokens autoregressively from q; the speculative loop scores the
chain in one target forward and accepts x_i with probability min(1, p_i(x_i) / q_i(x_i)),
resampling from norm(max(0, p_i - q_i)) at the first rejection, or a bonus token from
p_{gamma+1} when all are accepted. Greedy: accept while the draft equals the target's argmax.
Lossless for greedy and for sampling. Expected tokens per target forward at acceptance rate a:
(1 - a^(gamma+1)) / (1 - a).

Draft length. gamma = "auto" (the default) chooses gamma before every step from the measured cost
curves of both models at the context's length (models/costs.py: the target's forward of 1..16
tokens, the draft's 1-token forward) and the acceptance rate measured so far in the generation
(core/costs.py), down to 0, a plain target step, when no draft pays (and no draft forwards at all
while even always-accepted drafts would not pay: AutoLength.rest); a fixed gamma keeps it
(gpt-fast's 5 was the old default: on a CPU, where a small model's step costs almost linearly in
its tokens, it loses to gamma 2). Schedules: "constant" keeps gamma; "heuristic" is transformers'
assisted-generation rule: gamma + 2 after a fully accepted draft, gamma - 1 (at least 1)
otherwise, from gamma (5 when auto).
Deviation: the draft does not run the gamma-th forward that only re-syncs its cache; the next
propose() forwards the committed tokens the draft has not seen (models.base.sync).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.tree import Draft
from ..loops import speculative
from ..loops.drafting import AutoLevels, ChainDrafter, auto_levels
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class SpSConfig(Options):
    gamma: int | None = option(None, "draft tokens per step (the first gamma with the heuristic schedule); auto: "
                                     "chosen per step from measured forward costs and acceptance", lo=1, hi=128,
                               auto=True)
    schedule: str = option("constant", "constant gamma, or transformers' heuristic (+2 after a fully "
                           "accepted draft, -1 otherwise)", choices=("constant", "heuristic"))


class AutoChainDrafter(AutoLevels, ChainDrafter):
    """gamma chosen before each step by core.costs.AutoLength from both models' cost curves
    (loops.drafting.auto_levels: a chain is one token per level). kind: where its clock keeps step
    times, and (carry) where its acceptance and probe wait outlive a generation
    (models/costs.clock), one per method that drafts with it. carry=False: for a drafter that
    hands it only some steps (samd), whose wait would idle it across generations."""

    def __init__(self, req, kind: str = "sps", carry: bool = True):
        super().__init__(req, 0)
        self.auto = auto_levels(req, kind, carry=carry)

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        self.gamma = self._auto_depth(ctx, max_depth)
        return super().propose(ctx, max_depth)


class HeuristicChainDrafter(ChainDrafter):
    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        drafted = len(draft.tree) - 1
        if drafted:
            self.gamma = self.gamma + 2 if len(path) - 1 == drafted else max(1, self.gamma - 1)


@register("sps", family="speculative", config=SpSConfig, lossless="sampling", draft=True, budget="gamma",
          peer="hf:assisted")
def run(req, config: SpSConfig):
    if config.schedule == "heuristic":
        return speculative.decode(req, HeuristicChainDrafter(req, config.gamma or 5))
    if config.gamma is None:
        return speculative.decode(req, AutoChainDrafter(req))
    return speculative.decode(req, ChainDrafter(req, config.gamma))
