"""First Finish Search: sample n outputs in one batch and return the first to finish.

Agarwal et al. 2025, "First Finish Search: Efficient Test-Time Scaling in Large Language Models"
(arXiv 2505.18149). All n samples advance together, one target forward per step for all of them;
the first that emits a stop token (end of sequence) is the answer, and decoding stops there, so
the cost is n times the shortest output, not n times the longest. With a verifier (`reward`), a
finished sample counts only when its reward reaches `threshold`; finished samples that fail are
dropped and the others go on.

Deviations and choices: samples that finish on the same step are taken in batch order (the
first drawn). With no stop tokens (ignore_eos) nothing finishes early: every sample runs to the
budget and the first is returned. When no sample passes the verifier within the budget, the
output is the best-scoring finished one (else the best-scoring sample at the budget), so a
caller always gets an answer; `threshold` says what "passes" means. Not lossless.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import rewards
from ..loops.search import Searcher, Trial, emit, end_mask
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class FFSConfig(Options):
    n: int = option(4, "samples drawn side by side (one batch)", lo=1, hi=256)
    reward: str | None = rewards.reward_option("verifier: a finished sample is returned only if it passes")
    threshold: float = option(1.0, "a sample passes the verifier when its reward is at least this", lo=0, hi=1)

    def validate(self):
        rewards.check(self.reward)


@register("ffs", family="autoregressive", config=FFSConfig, lossless=None, needs=("batch",), modes=("sample",))
def run(req, config: FFSConfig):
    verifier = rewards.resolve(config.reward)
    search = Searcher(req)
    winner: list[Trial] = []
    scored: dict[int, float] = {}  # id(trial) -> its reward, for the fallback

    def halt(finished: list[Trial]) -> bool:
        if verifier is None:
            winner.append(finished[0])
            return True
        for t, s in zip(finished, _scores(req, verifier, finished, done=True)):
            scored[id(t)] = s
            if s >= config.threshold:
                winner.append(t)
                return True
        return False

    trials = search.sample(search.focus([req.prompt.tolist()]), config.n, ends=end_mask(req),
                           max_len=req.max_new_tokens, halt=halt)
    best = winner[0] if winner else _fallback(req, verifier, trials, scored)
    yield emit(req, best.tokens, best.logps)


def _scores(req, verifier, trials: list[Trial], done: bool) -> list[float]:
    prompt, texts = rewards.texts(req.target, req.prompt, [t.tokens for t in trials])
    return verifier.batch(prompt, texts, [done] * len(trials))


def _fallback(req, verifier, trials: list[Trial], scored: dict[int, float]) -> Trial:
    """No sample passed: the best-scoring finished one, else the best-scoring one at the budget
    (the first in batch order on ties)."""
    if verifier is None:
        return trials[0]
    finished = [t for t in trials if t.ended]
    if finished:
        return max(finished, key=lambda t: scored[id(t)])
    scores = _scores(req, verifier, trials, done=True)
    return trials[max(range(len(trials)), key=lambda i: (scores[i], -i))]
