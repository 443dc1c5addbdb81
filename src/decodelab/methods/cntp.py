"""CNTP, Cautious Next Token Prediction: where the model is unsure, sample several trials to the
next punctuation and keep the one it finds most probable.

Wang et al. 2025, "Cautious Next Token Prediction", Findings of ACL 2025 (arXiv 2507.03038).
At each step, with H the entropy (nats) of the next-token distribution, the number of trials is
n = int(1 + (N - 1) * clamp((H - entropy_low) / (entropy_high - entropy_low), 0, 1)). With
n = 1 the step samples one token, exactly as plain sampling does (same draws from the same
seed). Otherwise n trials are sampled, each until it emits a punctuation token (any of
`punctuation`, default . , newline ? ! : ; ) ] }), a stop token, or the budget; the trial with
the lowest perplexity exp(-mean log p) is appended whole. All n trials run as one batch
(loops.search): one target forward per trial step, not n.

Choices where the paper leaves room: H is the entropy of the raw distribution (temperature 1,
no filters) and a trial's perplexity uses the raw log p of its tokens, so neither depends on
the sampling temperature; a token "is punctuation" when its text contains one of the characters
(BPE tokens such as '),' or '.\\n' count); a model without a tokenizer has no punctuation, so its
trials end at stop tokens or the budget. Not lossless: it samples, then selects.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DecodeLabError
from ..loops.search import Searcher, emit, end_mask
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class CNTPConfig(Options):
    max_trials: int = option(10, "N: trials at the highest entropy (one batch)", lo=1, hi=64)
    entropy_low: float = option(0.01, "entropy (nats) at and below which a step samples one token", lo=0)
    entropy_high: float = option(1.5, "entropy (nats) at and above which a step samples max_trials trials", above=0)
    punctuation: str = option(".,\n?!:;)]}", "a trial ends after a token containing one of these characters")

    def validate(self):
        if self.entropy_high <= self.entropy_low:
            raise DecodeLabError(f"entropy_high ({self.entropy_high}) must be above entropy_low ({self.entropy_low})")


def trial_count(entropy: float, cfg: CNTPConfig) -> int:
    """n = int(1 + (N - 1) * clamp((H - low) / (high - low), 0, 1))."""
    share = min(1.0, max(0.0, (entropy - cfg.entropy_low) / (cfg.entropy_high - cfg.entropy_low)))
    return int(1 + (cfg.max_trials - 1) * share)


def entropy(logits: torch.Tensor) -> float:
    """Entropy in nats of softmax(logits) over the last dim. logits: [V]."""
    logp = torch.log_softmax(logits.double(), -1)
    return float(-(logp.exp() * logp).nan_to_num().sum())


@register("cntp", family="autoregressive", config=CNTPConfig, lossless=None, needs=("batch",), modes=("sample",))
def run(req, config: CNTPConfig):
    search = Searcher(req)
    ends = end_mask(req, config.punctuation)
    ctx, new = req.prompt.tolist(), 0
    while new < req.max_new_tokens:
        head = search.focus([ctx])  # [1, V]
        n = trial_count(entropy(head[0]), config)
        trials = search.sample(head, n, ends=ends, max_len=1 if n == 1 else req.max_new_tokens - new)
        best = min(trials, key=lambda t: -t.mean_logp)  # lowest perplexity; the first on ties
        out = emit(req, best.tokens, best.logps)
        ctx += out
        new += len(out)
        yield out
        if out[-1] in req.stops:
            return
