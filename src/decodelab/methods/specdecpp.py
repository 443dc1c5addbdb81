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
from ..loops.drafting import ChainDrafter
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class SpecDecPPConfig(Options):
    threshold: float = option(0.3, "stop drafting once P(some draft token is rejected) exceeds this",
                              above=0, below=1)
    min_len: int = option(2, "draft at least this many tokens per step", lo=1, hi=128)
    max_len: int = option(20, "draft at most this many tokens per step", lo=1, hi=128)
    head: str = option("code-draft", "acceptance head: a head directory, a bundled head under zoo/heads, "
                       "or 'none' (always max_len)")

    def validate(self):
        if self.min_len > self.max_len:
            raise DecodeLabError(f"need min_len <= max_len, got min_len={self.min_len}, max_len={self.max_len}")


class AdaptiveChainDrafter(ChainDrafter):
    def __init__(self, req, head, config: SpecDecPPConfig):
        super().__init__(req, config.max_len)
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


@register("specdecpp", family="speculative", config=SpecDecPPConfig, lossless="sampling", draft=True,
          budget=lambda b, given: {"max_len": b - 1} | ({} if "min_len" in given else {"min_len": min(2, b - 1)}),
          peer="hf:assisted")
def run(req, config: SpecDecPPConfig):
    return speculative.decode(req, AdaptiveChainDrafter(req, load_matching_head(config, req.draft), config))
