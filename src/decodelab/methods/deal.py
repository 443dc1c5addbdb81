"""DeAL, decoding-time alignment: a lookahead beam search whose candidates are ranked by a reward.

Huang et al. 2024, "DeAL: Decoding-time Alignment for Large Language Models" (arXiv 2402.06147;
ACL 2025). Decoding is a search guided by an alignment heuristic: from each of the kept beams,
`init_beams` candidates look `lookahead` tokens ahead, every candidate is scored by the user's
reward (programmatic, e.g. keywords and length, or a reward model) together with its likelihood,
and the best `num_beams` are kept. Greedy mode (the paper's setting): a beam's candidates start
with its `init_beams` most probable next tokens and continue greedily; sampling mode draws them.
All candidates of all beams run in one batch (loops.search): one target forward per lookahead
token.

score = mean log p of the hypothesis (raw, per token) + reward_weight x reward(hypothesis).
A candidate that emits a stop token or reaches max_new_tokens is finished; finished candidates
that are kept leave the beam, and the search ends when no beam is left. The output is the
finished hypothesis with the best score. Without a reward it is a lookahead beam search on
likelihood alone; with init_beams = num_beams = 1 it is greedy decoding.

Deviations: the paper scores a candidate next token by a lookahead from it and commits one
token; here a kept candidate keeps its whole lookahead (as in the card and IBM AISteer360's
implementation), so an iteration advances `lookahead` tokens and costs num_beams x init_beams x
lookahead scored tokens, not that per token. The card's `top_k` is `num_beams` here (top_k is the
sampling filter's name). Not lossless.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import rewards
from ..loops.search import Searcher, emit, end_mask
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class DeALConfig(Options):
    lookahead: int = option(4, "tokens each candidate looks ahead (kept whole when the candidate is kept)",
                            lo=1, hi=256)
    init_beams: int = option(8, "candidates from each kept beam per iteration", lo=1, hi=64)
    num_beams: int = option(4, "candidates kept per iteration (DeAL's top-k)", lo=1, hi=64)
    reward: str | None = rewards.reward_option("alignment reward ranking the candidates (none: likelihood only)")
    reward_weight: float = option(1.0, "score = mean log p + reward_weight x reward", lo=0, hi=1e6)

    def validate(self):
        rewards.check(self.reward)


@dataclass
class Hypothesis:
    tokens: list[int]
    logps: list[float]
    done: bool
    score: float = 0.0


@register("deal", family="autoregressive", config=DeALConfig, lossless=None, needs=("batch",))
def run(req, config: DeALConfig):
    reward = rewards.resolve(config.reward)
    searcher, ends, prompt = Searcher(req), end_mask(req), req.prompt.tolist()
    beams, finished = [Hypothesis([], [], False)], []
    while beams:
        head = searcher.focus([prompt + b.tokens for b in beams])  # [J, V]
        n = min(config.init_beams, head.shape[-1])
        first = head.topk(n, dim=-1).indices if req.greedy else None  # [J, n]
        room = req.max_new_tokens - len(beams[0].tokens)
        trials = searcher.sample(head, n, ends=ends, max_len=min(config.lookahead, room), first=first)
        cands, seen = [], set()
        for t in trials:
            tokens = beams[t.source].tokens + t.tokens
            if tuple(tokens) not in seen:  # sampled candidates may repeat
                seen.add(tuple(tokens))
                done = (t.ended and t.tokens[-1] in req.stops) or len(tokens) >= req.max_new_tokens
                cands.append(Hypothesis(tokens, beams[t.source].logps + t.logps, done))
        _score(req, reward, config.reward_weight, cands)
        kept = sorted(cands, key=lambda c: -c.score)[:config.num_beams]  # stable: batch order on ties
        finished += [c for c in kept if c.done]
        beams = [c for c in kept if not c.done]
    best = max(finished, key=lambda c: c.score)
    yield emit(req, best.tokens, best.logps)


def _score(req, reward, weight: float, cands: list[Hypothesis]) -> None:
    r = [0.0] * len(cands)
    if reward is not None:
        prompt, texts = rewards.texts(req.target, req.prompt, [c.tokens for c in cands])
        r = reward.batch(prompt, texts, [c.done for c in cands])
    for c, x in zip(cands, r):
        c.score = sum(c.logps) / len(c.logps) + weight * x
