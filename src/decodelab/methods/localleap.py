"""LocalLeap: parallel unmasking around confident anchors (local determinism propagation): a
masked position next to a very confident one needs only a relaxed confidence threshold.

Paper: Kong et al. 2025, "Accelerating Diffusion LLM Inference via Local Determinism
Propagation", arXiv 2510.07081 (reported on LLaDA: 6.94x throughput, steps down to 14.2%).

Notation as in loops/diffusion.py: x0 = the proposed token, conf = p(x0) in float64. Each step,
within the current block:
- anchors = masked positions with conf >= `threshold` (default 0.9);
- a masked position within `radius` (default 4) positions of an anchor is unmasked when its
  conf >= `relaxed_threshold` (default 0.75); any other position needs `threshold`;
- the most confident masked position is always unmasked (every step makes progress).
With `relaxed_threshold = threshold` this is Fast-dLLM's threshold rule. `eos_fill="block"` (the
default, the paper's early stop): once a finished block holds end-of-text, every later position
becomes end-of-text without a forward. `block_length` as LLaDA (None: one block); `cache` as
fast_dllm (prefix / dual KV caches refreshed per block; the paper does not combine them, the
loop offers them to every method that runs without a step schedule).

Deviations: none in the rule (their code: the top-1 plus every other masked position whose
conf clears its effective threshold, anchors and neighbours taken over the masked positions of
the block). Confidence in float64 and ties to the leftmost position (core/unmask.py).
With end-of-text as a stop (generate's default) the loop already ends once the decoded prefix
holds end-of-text, so the fill changes only outputs decoded with ignore_eos. Not lossless.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import unmask
from ..errors import DecodeLabError
from ..loops import diffusion
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class LocalLeapConfig(Options):
    threshold: float = option(0.9, "anchor threshold: a masked position with confidence >= this is an anchor and "
                                   "is unmasked", lo=0, hi=1)
    relaxed_threshold: float = option(0.75, "threshold for masked positions within `radius` of an anchor",
                                      lo=0, hi=1)
    radius: int = option(4, "how far (in positions) an anchor relaxes the threshold", lo=0, hi=8192)
    eos_fill: str = option("block", "block: once a finished block holds end-of-text, fill the rest with it; none: "
                                    "decode every block", choices=("block", "none"))
    cache: str = option("none", "KV cache: none, prefix or dual (as fast_dllm); refreshed once per block",
                        choices=diffusion.CACHES)
    block_length: int | None = option(None, "semi-autoregressive block length (None: one block); must divide "
                                            "max_new_tokens", lo=1, hi=8192)

    def validate(self) -> None:
        if self.relaxed_threshold > self.threshold:
            raise DecodeLabError(f"localleap: relaxed_threshold ({self.relaxed_threshold}) must not exceed "
                                 f"threshold ({self.threshold})")


def local_leap(conf: torch.Tensor, threshold: float, relaxed: float, radius: int) -> torch.Tensor:
    """Positions to unmask, in confidence order. conf: [b] float64, -inf where not masked."""
    order = unmask.top_k(conf, int(torch.isfinite(conf).sum()))  # masked positions, most confident first
    anchors = (conf >= threshold).nonzero()[:, 0]  # [A]
    pos = torch.arange(len(conf))
    near = (pos[:, None] - anchors[None, :]).abs().le(radius).any(dim=1)  # [b]
    need = torch.where(near, torch.tensor(relaxed, dtype=conf.dtype), torch.tensor(threshold, dtype=conf.dtype))
    keep = conf[order] >= need[order]
    keep[:1] = True
    return order[keep]


class LocalLeap:
    def __init__(self, config: LocalLeapConfig):
        self.c = config

    def select(self, view):
        return local_leap(view.conf, self.c.threshold, self.c.relaxed_threshold, self.c.radius)


@register("localleap", family="diffusion", config=LocalLeapConfig, lossless=None)
def run(req, config: LocalLeapConfig):
    return diffusion.decode(req, LocalLeap(config), block_length=config.block_length, cache=config.cache,
                            eos_fill=config.eos_fill)
