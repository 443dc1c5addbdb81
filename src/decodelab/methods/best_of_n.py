"""Best-of-n: sample n complete outputs in one batch, return the one the reward scores highest.

The reranking baseline of reward-guided decoding: Stiennon et al. 2020, "Learning to summarize
from human feedback" (arXiv 2009.01325), and Nakano et al. 2021, "WebGPT" (arXiv 2112.09332),
select the best of n samples by a reward model; DeAL (arXiv 2402.06147) compares against it.
All n samples advance together (one target forward per step); each ends at a stop token or the
budget. Ties in reward go to the higher mean log p, then to the first drawn; without a reward
the most probable sample (highest mean log p) wins. It is also the equal-compute reference for
the search methods: n samples cost about n times the tokens of one. Not lossless.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import rewards
from ..loops.search import Searcher, emit, end_mask
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class BestOfNConfig(Options):
    n: int = option(8, "samples drawn side by side (one batch)", lo=1, hi=256)
    reward: str | None = rewards.reward_option("what ranks the samples (none: their mean log p)")

    def validate(self):
        rewards.check(self.reward)


@register("best_of_n", family="autoregressive", config=BestOfNConfig, lossless=None, needs=("batch",),
          modes=("sample",))
def run(req, config: BestOfNConfig):
    reward = rewards.resolve(config.reward)
    search = Searcher(req)
    trials = search.sample(search.focus([req.prompt.tolist()]), config.n, ends=end_mask(req),
                           max_len=req.max_new_tokens)
    scores = [0.0] * len(trials)
    if reward is not None:
        prompt, texts = rewards.texts(req.target, req.prompt, [t.tokens for t in trials])
        scores = reward.batch(prompt, texts, [True] * len(trials))
    best = max(range(len(trials)), key=lambda i: (scores[i], trials[i].mean_logp, -i))
    yield emit(req, trials[best].tokens, trials[best].logps)
