"""Fast-dLLM: confidence-aware parallel decoding (unmask every masked position of the block whose
confidence clears a threshold, at least the most confident one) with block-wise prefix or dual
KV caches.

Paper: Wu et al. 2025, "Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV
Cache and Parallel Decoding", arXiv 2505.22618; code github.com/NVlabs/Fast-dLLM (llada/generate.py:
get_transfer_index, get_transfer_index_dynamic, generate_with_prefix_cache, generate_with_dual_cache).

Notation as in loops/diffusion.py: x0 = the proposed token, conf = p(x0) in float64 (as their code).
- `rule="threshold"`: a step unmasks the most confident masked position of the block plus every
  other one with conf >= `threshold` (default 0.9). `rule="factor"`: the paper's factor rule,
  the largest n such that (n + 1)(1 - c_(n)) < `factor` for the n-th highest confidence c_(n),
  at least 1 (their Theorem: parallel decoding then agrees with sequential greedy decoding).
- `cache`: "none" forwards the whole canvas every step; "prefix" forwards the whole canvas at a
  block's first step, keeps the keys and values before the block, and then forwards the block
  and everything after it; "dual" also keeps those after the block and forwards the block alone.
  The kept entries are refreshed once per block (the paper's approximation: they were computed
  with the block still masked). Needs an adapter with the "kv_cache" capability (the zoo's
  tasks-mdlm-llama; ModernBERT has no KV cache in transformers).
- Blocks: `block_length` as LLaDA (None: one block). There is no step budget: a block takes as
  many steps as the rule needs (at most one per position).

Deviations: the factor rule takes the largest passing n as the paper states; their code also
commits one more position when exactly the last candidate fails (an off-by-one at the end of its
search loop). Sampling draws Gumbel noise for the scored rows only (as methods/llada.py).
Not lossless: parallel unmasking and the cache both change outputs (measured in the bench and in
tests/methods/test_fast_dllm.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core import unmask
from ..loops import diffusion
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class FastDLLMConfig(Options):
    rule: str = option("threshold", "parallel unmasking rule: confidence threshold, or the paper's factor rule",
                       choices=("threshold", "factor"))
    threshold: float = option(0.9, "rule=threshold: unmask every masked position with confidence >= this "
                                   "(the most confident one always)", lo=0, hi=1)
    factor: float = option(1.0, "rule=factor: unmask the largest n with (n + 1)(1 - c_n) < factor", above=0, hi=64)
    cache: str = option("none", "KV cache: none, prefix (before the block) or dual (before and after it); "
                                "refreshed once per block", choices=diffusion.CACHES)
    block_length: int | None = option(None, "semi-autoregressive block length (None: one block); must divide "
                                            "max_new_tokens", lo=1, hi=8192)


class Threshold:
    def __init__(self, threshold: float):
        self.threshold = threshold

    def select(self, view):
        return unmask.above_threshold(view.conf, self.threshold)


class Factor:
    def __init__(self, factor: float):
        self.factor = factor

    def select(self, view):
        order = unmask.top_k(view.conf, int(view.masked.sum()))
        return order[: unmask.factor_count(view.conf[order], self.factor)]


@register("fast_dllm", family="diffusion", config=FastDLLMConfig, lossless=None)
def run(req, config: FastDLLMConfig):
    policy = Threshold(config.threshold) if config.rule == "threshold" else Factor(config.factor)
    return diffusion.decode(req, policy, block_length=config.block_length, cache=config.cache)
