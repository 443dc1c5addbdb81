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

This module also holds `DraftModelDrafter`, the draft-model plumbing the tree methods (dyspec,
rsd_c, rsd_s) and specdecpp share: processed q, scoring a whole draft tree in one draft forward
with a tree mask, and keeping the draft's KV cache equal to the committed prefix.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.sampling import SamplingConfig, probs_from_logits, sample
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


class DraftModelDrafter:
    """Draft-model plumbing shared by the draft-model methods.

    q(logits) is the processed draft distribution (the same SamplingConfig as p; plain softmax when
    greedy). Tree drafters call `score_tree` once per expansion round: it truncates the draft cache
    to the committed context and forwards every non-root node with the tree mask, so the cache never
    mixes siblings. `observe` then keeps the cache entries of the accepted path, so the next
    `sync` only forwards what the draft has not seen.
    """

    def __init__(self, draft: CausalLM, sampling: SamplingConfig, rng: torch.Generator | None):
        self.draft, self.sampling, self.rng = draft, sampling, rng
        self._scored = 0  # tree nodes 1.._scored are in the draft cache after the last score_tree
        draft.reset()

    def q(self, logits: torch.Tensor) -> torch.Tensor:  # [..., V] -> [..., V]
        return probs_from_logits(logits, self.sampling)

    def root_logits(self, ctx: torch.Tensor) -> torch.Tensor:
        """Draft logits after ctx[-1], the cache holding exactly ctx. [V]"""
        self._scored = 0
        return sync(self.draft, ctx)

    def score_tree(self, ctx_len: int, tokens: list[int], parents: list[int]) -> torch.Tensor:
        """Draft logits after each non-root node of the tree (root = ctx[-1]). -> [N - 1, V]"""
        tree = TokenTree.from_lists(tokens, parents)
        self.draft.truncate(ctx_len)
        step = self.draft.forward(tree.tokens[1:], tree.positions(ctx_len - 1)[1:],
                                  tree_mask=tree.attention_mask[1:, 1:])
        self._scored = len(tokens) - 1
        return step.logits

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        if self._scored:  # keep ctx + the accepted nodes the draft has scored (a prefix of the path)
            self.draft.commit([i - 1 for i in path[1:] if i <= self._scored])
            self._scored = 0


def stack_q(rows: dict[int, torch.Tensor], n: int, vocab: int) -> torch.Tensor:
    """[n, V] q matrix from {node: q row}; nodes without children get zeros."""
    q = torch.zeros(n, vocab)
    for i, row in rows.items():
        q[i] = row
    return q


class ChainDrafter(DraftModelDrafter):
    """Drafts a chain of up to `gamma` tokens from a draft model, recording q when sampling."""

    def __init__(self, draft: CausalLM, sampling: SamplingConfig, rng: torch.Generator | None, gamma: int):
        super().__init__(draft, sampling, rng)
        self.gamma = gamma

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        n = min(self.gamma, max_depth)
        tokens, qs = [int(ctx[-1])], []
        if n == 0:
            return Draft(TokenTree.chain(tokens))
        logits = self.root_logits(ctx)  # [V]
        for i in range(n):
            tokens.append(self.next_token(logits, qs))
            if i < n - 1 or self.scores_last:
                pos = torch.tensor([len(ctx) + i])
                step = self.draft.forward(torch.tensor([tokens[-1]]), pos, hidden=self.scores_last)
                logits = step.logits[-1]
                if self.stop(step, i + 1):
                    break
        q = torch.cat([torch.stack(qs), torch.zeros(1, qs[0].shape[-1])]) if qs else None  # [n+1, V]
        return Draft(TokenTree.chain(tokens), q)

    def next_token(self, logits: torch.Tensor, qs: list[torch.Tensor]) -> int:
        if not self.sampling.do_sample:
            return int(logits.argmax())
        qs.append(self.q(logits))
        return int(sample(qs[-1], self.rng))

    # Hooks for adaptive-length chains (specdecpp): forward the newest token with hidden states and
    # stop after `drafted` tokens when the hook says so. SpS drafts exactly gamma tokens.
    scores_last = False

    def stop(self, step, drafted: int) -> bool:
        return False

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        pass  # chain forwards are sequential, so the cache is already right for sync


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
