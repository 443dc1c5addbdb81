"""SpecDec++: adaptive candidate length (Huang et al. 2024, "SpecDec++: Boosting Speculative
Decoding via Adaptive Candidate Lengths", arXiv 2405.19715).

Notation: p = target, q = draft. Chain drafting as SpS, but after each draft token x_i the draft
forwards x_i (with hidden states) and an acceptance head on its last hidden state predicts
a_i = P(x_i accepted). With cum = prod_i a_i, drafting stops as soon as 1 - cum > threshold
(the chance that at least one drafted token is rejected), never before `min_len` tokens and always
at `max_len`. Verification is SpS's (one target forward, greedy check or speculative sampling), so
the method is lossless for greedy and sampling: the stop rule uses draft-side information only.

The head (decodelab.train.acceptance_head: 3 residual SiLU blocks + Linear(h, 2)) is trained for
one draft model; `head` names a head directory or a bundled head under zoo/heads (default: the
head bundled for the zoo draft, `code-draft`), and must match the draft's hidden size.
`head="none"` runs without a head: every draft is max_len tokens long (SpS with gamma = max_len),
for draft models no head was trained for. Defaults (paper): threshold 0.3, length bounds [2, 20].
Reading chosen: the head reads the draft's hidden state AT x_i (after the draft has seen x_i),
which is what our training recipe builds (train.acceptance_head) and needs no extra draft forward:
the same forward gives x_{i+1}'s logits. The one extra draft forward per step compared with SpS
is the forward of the last drafted token, which the stop decision needs.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DecodeLabError
from ..loops import speculative
from ..registry import register
from .sps import ChainDrafter


@dataclass(frozen=True, kw_only=True)
class SpecDecPPConfig:
    threshold: float = 0.3
    min_len: int = 2
    max_len: int = 20
    head: str = "code-draft"  # a head directory, a bundled head's name under zoo/heads, or "none"

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise DecodeLabError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 1 <= self.min_len <= self.max_len:
            raise DecodeLabError(f"need 1 <= min_len <= max_len, got min_len={self.min_len}, max_len={self.max_len}")


class AdaptiveChainDrafter(ChainDrafter):
    def __init__(self, draft, sampling, rng, head, config: SpecDecPPConfig):
        super().__init__(draft, sampling, rng, config.max_len)
        self.head, self.config = head, config
        self.scores_last = head is not None
        self._cum = 1.0
        self.lengths: list[int] = []  # drafted length per step, for inspection

    def propose(self, ctx, max_depth):
        self._cum = 1.0
        draft = super().propose(ctx, max_depth)
        self.lengths.append(len(draft.tree) - 1)
        return draft

    def stop(self, step, drafted: int) -> bool:
        if self.head is None:
            return False
        self._cum *= float(self.head.p_accept(step.hidden[-1]))
        return drafted >= self.config.min_len and 1.0 - self._cum > self.config.threshold


def load_matching_head(config: SpecDecPPConfig, draft):
    from ..train.acceptance_head import load_head

    if config.head == "none":
        return None
    if "hidden_states" not in draft.capabilities:
        raise DecodeLabError("specdecpp needs a draft model that returns hidden states")
    head, cfg = load_head(config.head)
    hidden = getattr(getattr(draft, "config", None), "hidden_size", None)
    if hidden is not None and hidden != cfg["hidden"]:
        raise DecodeLabError(f"the acceptance head '{config.head}' reads hidden size {cfg['hidden']}, but the "
                             f"draft's is {hidden}; train one for this draft with `decodelab train acceptance-head`")
    return head


@register("specdecpp", family="speculative", config=SpecDecPPConfig, lossless="sampling", draft=True)
def run(target, prompt, max_new_tokens, *, config, sampling, draft, rng, stops, stats):
    drafter = AdaptiveChainDrafter(draft, sampling, rng, load_matching_head(config, draft), config)
    return speculative.decode(target, drafter, prompt, max_new_tokens, sampling, rng, stops, stats)
