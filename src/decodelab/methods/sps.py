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

Schedules: "constant" keeps gamma (default 5, as gpt-fast); "heuristic" is transformers'
assisted-generation rule: gamma + 2 after a fully accepted draft, gamma - 1 (at least 1) otherwise.
Deviation: the draft does not run the gamma-th forward that only re-syncs its cache; the next
propose() forwards the committed tokens the draft has not seen (models.base.sync).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.tree import Draft
from ..loops import speculative
from ..loops.drafting import ChainDrafter
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class SpSConfig(Options):
    gamma: int = option(5, "draft tokens per step (the first gamma with the heuristic schedule)", lo=1, hi=128)
    schedule: str = option("constant", "constant gamma, or transformers' heuristic (+2 after a fully "
                           "accepted draft, -1 otherwise)", choices=("constant", "heuristic"))


class HeuristicChainDrafter(ChainDrafter):
    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        drafted = len(draft.tree) - 1
        if drafted:
            self.gamma = self.gamma + 2 if len(path) - 1 == drafted else max(1, self.gamma - 1)


@register("sps", family="speculative", config=SpSConfig, lossless="sampling", draft=True, budget="gamma",
          peer="hf:assisted")
def run(req, config: SpSConfig):
    cls = HeuristicChainDrafter if config.schedule == "heuristic" else ChainDrafter
    return speculative.decode(req, cls(req, config.gamma))
