"""FreeDave: lossless parallel decoding of masked diffusion LMs by drafting the next scheduled
steps and verifying them in one batched forward; the output equals LLaDA's low-confidence
decoding with the same steps and blocks (one position per step by default), with fewer forwards.

Paper: Wu and Zhang 2025, "Free Draft-and-Verification: Toward Lossless Parallel Decoding for
Diffusion Large Language Models", arXiv 2510.00294; code github.com/cychomatica/FreeDave
(generate/llada_generate.py, generate_with_prefix_cache_FreeDave).

Notation as in loops/diffusion.py. From the logits of the current canvas, draft j (j = 1..K)
unmasks the positions of the next j scheduled steps at once: the top-(n_1 + ... + n_j)
positions by confidence, each to its x0. Draft 1 is exactly the baseline's next step. One
batched forward scores drafts 1..K; draft j + 1 is accepted while one baseline step taken from
draft j's logits produces exactly draft j + 1 (same positions, same tokens). The longest
accepted draft becomes the canvas, and its logits, already computed, serve the next step: each
forward then advances 1 to K steps. Because every accepted canvas is one the baseline reaches
step by step, the output equals the baseline's exactly (greedy; tested on the zoo models). The
cost: a verifying forward scores up to K canvases (forwarded tokens grow up to K-fold), so on
hardware without idle parallelism (one CPU core) fewer forwards need not mean less time.

Deviations: a block's last draft, when it fills the block, is not forwarded (its logits would
never be used); drafts stay within the current block, so a block change costs one plain forward
(their code also refreshes at each block). Lossless only when forwards of a batch equal forwards
of one canvas (checked for the zoo models on CPU; reduced precision or other kernels may break
ties differently). Greedy only; no KV cache (their KV-cache variant approximates, as Fast-dLLM's).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..loops import diffusion
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class FreeDaveConfig(Options):
    drafts: int = option(4, "K: scheduled steps drafted and verified per forward (the batch of one forward)",
                         lo=1, hi=64)
    steps: int | None = option(None, "diffusion steps of the baseline it reproduces (None: max_new_tokens, one "
                                     "position per step)", lo=1, hi=8192)
    block_length: int | None = option(None, "semi-autoregressive block length (None: one block); must divide "
                                            "max_new_tokens", lo=1, hi=8192)


@register("freedave", family="diffusion", config=FreeDaveConfig, lossless="greedy", modes=("greedy",))
def run(req, config: FreeDaveConfig):
    schedule = diffusion.even_schedule(req.max_new_tokens, config.block_length, config.steps)
    return diffusion.decode(req, diffusion.Ranked(), block_length=config.block_length, schedule=schedule,
                            drafts=config.drafts)
