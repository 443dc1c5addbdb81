"""Learn2PD: parallel unmasking decided by a tiny learned filter, and End-of-Text Prediction.

Paper: Bao et al. 2025, "Learning to Parallel: Accelerating Diffusion Large Language Models via
Learnable Parallel Decoding", arXiv 2509.25188 (reported on LLaDA: up to 22.58x without accuracy
loss, 57.51x with a KV cache).

Notation as in loops/diffusion.py: x0 = the proposed token, conf = p(x0) in float64. The filter
(train/learn2pd.py: Linear(b, 32) -> ReLU -> Linear(32, b), ~2K parameters at b = 32) reads the
current block's confidence vector, conf at masked positions and 1.0 at unmasked ones, and gives
each position a logit for "x0 here already equals the final output". Each step, within the block:
- every masked position with sigmoid(logit) > `threshold` (0.96, the paper's) is unmasked,
- plus the scheduled top-k by conf of llada's schedule (`steps`; default one position per step,
  as the one-token-per-step runs the filter was trained on), so every step makes progress;
  commit order: by conf. `threshold=1` never passes the filter: llada with the same schedule.
- End-of-Text Prediction (`eos_fill="token"`, the default): once a step commits end-of-text, every
  masked position after it becomes end-of-text in the same step (the loop's fill; "none" offered).
The filter is trained per model and block length (`decodelab train learn2pd --model MODEL`).
`filter` names a filter directory or a bundled one under zoo/heads; by default the one bundled
for the model: zoo/heads/<model>-learn2pd (trained on the model's whole answer canvas) when
`block_length` is not given, else <model>-learn2pd-b<B> (or <model>-learn2pd when trained for B).
`block_length` None means the filter's own block length. A filter reads exactly its block length's
confidences: another block length is refused (its inputs would mean other positions).

Deviations: positions already unmasked carry 1.0, not their commit-time confidence (the filter
needs no per-generation memory; the paper leaves this open); the scheduled top-k is added to the
filter's picks as the card states (their code keeps LLaDA's step schedule running under the
filter). `cache` as fast_dllm (prefix / dual caches refreshed per block; the paper's 57.51x uses
one); the filter was trained without a cache, so with one its inputs drift with the cache's
approximation. Not lossless: the filter's mistakes commit tokens one-per-step decoding would not.
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
class Learn2PDConfig(Options):
    threshold: float = option(0.96, "unmask every masked position whose filter probability exceeds this (plus "
                                    "the scheduled top-k); 1: none, llada's schedule alone", lo=0, hi=1)
    filter: str | None = option(None, "the filter: a directory or a bundled name under zoo/heads (None: the "
                                      "one bundled for the model and block length)")
    steps: int | None = option(None, "llada schedule under the filter (None: max_new_tokens, at least one "
                                     "position per step)", lo=1, hi=8192)
    eos_fill: str = option("token", "token: once end-of-text is committed, fill every masked position after it "
                                    "(End-of-Text Prediction); none: decode them", choices=("token", "none"))
    cache: str = option("none", "KV cache: none, prefix or dual (as fast_dllm); refreshed once per block",
                        choices=diffusion.CACHES)
    block_length: int | None = option(None, "semi-autoregressive block length (None: the filter's); must "
                                            "divide max_new_tokens and match the filter", lo=1, hi=8192)


def learn2pd_pick(conf: torch.Tensor, p_final: torch.Tensor, k: int, threshold: float) -> torch.Tensor:
    """Positions to unmask, in confidence order: the top-k by conf plus every masked position with
    p_final > threshold. conf: [b] float64, -inf where not masked; p_final: [b]."""
    order = unmask.top_k(conf, int(torch.isfinite(conf).sum()))  # masked positions, most confident first
    keep = p_final[order] > threshold
    keep[:k] = True
    return order[keep]


class Learn2PD:
    def __init__(self, filt, threshold: float):
        from ..train.learn2pd import features

        self.filter, self.threshold, self.features = filt, threshold, features

    def select(self, view):
        p = self.filter.p_final(self.features(view.conf, view.masked))  # [b]
        return learn2pd_pick(view.conf, p, max(1, view.k or 1), self.threshold)


def resolve_filter(config: Learn2PDConfig, lm):
    """The filter for this model and config; refuses a missing or mismatched one."""
    from ..train.learn2pd import HEADS_DIR, default_filter_name, load_filter, model_name

    b = config.block_length
    if config.filter is not None:
        filt, _ = load_filter(config.filter)
        if b is not None and b != filt.block_length:
            raise DecodeLabError(f"learn2pd: the filter '{config.filter}' reads blocks of {filt.block_length} "
                                 f"positions, not block_length={b}; train one for it with `decodelab train learn2pd "
                                 f"--model MODEL --block-length {b}`, or leave block_length unset")
        return filt
    model, hint = model_name(lm), f" --block-length {b}" if b is not None else ""
    if model is None:
        raise DecodeLabError("learn2pd: no filter given and the model has no name to find its bundled one by; "
                             f"pass filter=DIR, trained with `decodelab train learn2pd --model MODEL_DIR{hint} "
                             "--out DIR`")
    for name in [default_filter_name(model, b)] + ([default_filter_name(model, None)] if b is not None else []):
        if (HEADS_DIR / name / "config.json").is_file():
            filt, _ = load_filter(name)
            if b is None or filt.block_length == b:
                return filt
    raise DecodeLabError(f"learn2pd: no filter bundled for {model}{f' with blocks of {b}' if b is not None else ''} "
                         f"(zoo/heads/{default_filter_name(model, b)}); train one with `decodelab train learn2pd "
                         f"--model zoo:{model}{hint}`, or pass filter=DIR")


@register("learn2pd", family="diffusion", config=Learn2PDConfig, lossless=None)
def run(req, config: Learn2PDConfig):
    filt = resolve_filter(config, req.target)
    G, b = req.max_new_tokens, filt.block_length
    if G % b:
        raise DecodeLabError(f"learn2pd: the filter reads blocks of {b} positions, which must divide max_new_tokens "
                             f"({G}); use a multiple of {b}, or a filter trained for another block length")
    schedule = diffusion.even_schedule(G, b, config.steps)
    return diffusion.decode(req, Learn2PD(filt, config.threshold), block_length=b, schedule=schedule,
                            cache=config.cache, eos_fill=config.eos_fill)
