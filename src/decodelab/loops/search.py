"""The search loop: several continuations sampled side by side, one batched target forward per step.

CNTP's trials, First Finish Search's and best-of-n's samples, A*-decoding's candidate steps and
DeAL's lookaheads are one operation: from each of J contexts (token lists of equal length), run n
continuations ("trials") in lockstep, each until its end rule fires (a punctuation or delimiter
token, a stop token) or it reaches its length cap. `Searcher` owns the target's KV cache for it:

- `focus(contexts)` makes the cache hold exactly the contexts, one batch row each, and returns
  the target's logits after each. It keeps, per context, the cached row sharing the longest
  prefix with it and forwards only the rest, so a search that returns to a state it has just
  extended pays for the new tokens only.
- `sample(logits, n, ...)` repeats each row n times and steps all trials together: one forward
  of [R, 1] tokens per step, R the live trials. A trial that ends leaves the batch (`select`), so
  every row has the same length: no padding and no masks.

Glossary: a trial's `logps` are the raw log p of its tokens under the target (temperature 1, no
filters, as `logprobs` reports), whatever distribution `pick` drew them from. Every target
forward appends 0 to `stats.committed`; `emit` adds what a method commits to the last entry, so
the list still sums to the tokens returned.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.sampling import check_finite, choose
from ..types import StepTrace
from .common import start


@dataclass
class Trial:
    source: int  # the index of the context it continues
    tokens: list[int] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)  # raw log p of each token under the target
    ended: bool = False  # its end rule fired (not cut by the length cap or a halt)

    @property
    def mean_logp(self) -> float:
        return sum(self.logps) / len(self.logps) if self.logps else 0.0


class Searcher:
    def __init__(self, req):
        self.req, self.target = req, req.target
        start(self.target, req.prompt)
        self.rows: list[list[int]] = [req.prompt[:-1].tolist()]  # the ids each cache row holds
        self._focused: list[list[int]] | None = None

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """The request's own choice per row: argmax when greedy, else a draw from the processed p.
        logits: [R, V] -> ids [R]."""
        return choose(logits, self.req.sampling, self.req.rng)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[R, N] ids at [R, N] positions -> logits [R, V] after the last of them."""
        logits = self.target.forward(ids, positions).logits[:, -1]  # [R, V]
        check_finite(logits)
        self.req.stats.committed.append(0)
        return logits

    def focus(self, contexts: list[list[int]]) -> torch.Tensor:
        """Make the cache hold the contexts (equal lengths) and return the logits after each. [J, V]"""
        length = len(contexts[0])
        assert all(len(c) == length for c in contexts), "contexts of one focus must have equal lengths"
        best = [max(range(len(self.rows)), key=lambda r: _common(self.rows[r], c)) for c in contexts]
        keep = min(min(_common(self.rows[r], c) for r, c in zip(best, contexts)), length - 1)
        if best != list(range(len(self.rows))):
            self.target.select(torch.tensor(best))
        self.target.truncate(keep)
        ids = torch.tensor([c[keep:] for c in contexts])  # [J, L - keep]
        logits = self._forward(ids, torch.arange(keep, length).repeat(len(contexts), 1))
        self.rows = [list(c) for c in contexts]
        self._focused = self.rows
        return logits

    def sample(self, logits: torch.Tensor, n: int, *, ends: torch.Tensor, max_len: int,
               first: torch.Tensor | None = None, pick: Callable | None = None,
               halt: Callable[[list[Trial]], bool] | None = None) -> list[Trial]:
        """n trials from each focused context, all in one batch, trials of context j first.

        logits: [J, V] from focus(). ends: [V] bool, the tokens after which a trial ends (it keeps
        them). max_len: each trial's cap (>= 1). first: [J, n] first tokens to force (DeAL's top
        tokens) instead of picking them. halt(trials that ended this step) -> True stops every
        trial now (First Finish Search)."""
        contexts, self._focused = self._focused, None
        assert contexts is not None and max_len >= 1, "sample() continues the contexts of the last focus()"
        pick = pick or self.pick
        j = len(contexts)
        trials = [Trial(s) for s in range(j) for _ in range(n)]
        live = list(range(j * n))  # the trial each batch row carries
        logits = logits.repeat_interleave(n, dim=0)  # [J n, V]
        self.target.select(torch.arange(j).repeat_interleave(n))
        tok = first.reshape(-1) if first is not None else pick(logits)  # [R]
        step = 0
        while True:
            logp = torch.log_softmax(logits.float(), -1).gather(-1, tok[:, None])[:, 0].tolist()
            stop, done_rows, newly = False, set(), []
            for r, (t, x) in enumerate(zip(live, tok.tolist())):
                trial = trials[t]
                trial.tokens.append(x)
                trial.logps.append(logp[r])
                trial.ended = bool(ends[x])
                if trial.ended or len(trial.tokens) >= max_len:
                    done_rows.add(r)
                    newly += [trial] if trial.ended else []
            if halt is not None and newly:
                stop = bool(halt(newly))
            keep = [r for r in range(len(live)) if r not in done_rows]
            if stop or not keep:
                # the cache rows hold each live trial's context and all its tokens but the last
                self.rows = [contexts[trials[t].source] + trials[t].tokens[:-1] for t in live]
                return trials
            if len(keep) < len(live):
                self.target.select(torch.tensor(keep))
                live, tok = [live[r] for r in keep], tok[keep]
            pos = torch.full((len(live), 1), len(contexts[0]) + step)
            logits = self._forward(tok[:, None], pos)
            tok = pick(logits)
            step += 1


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of a and b."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@functools.lru_cache(maxsize=16)
def _marks(tokenizer, vocab_size: int, chars: str) -> torch.Tensor:
    """[V] bool: the tokens whose text contains any of `chars` (decoded once per tokenizer)."""
    n = min(vocab_size, len(tokenizer))
    text = tokenizer.batch_decode([[i] for i in range(n)])
    out = torch.zeros(vocab_size, dtype=torch.bool)
    out[:n] = torch.tensor([any(c in t for c in chars) for t in text])
    return out


def end_mask(req, chars: str = "") -> torch.Tensor:
    """[V] bool: the request's stop tokens, and (with a tokenizer) every token whose text contains
    one of `chars`. A model without a tokenizer ends trials at its stop tokens only."""
    v = req.target.vocab_size
    tok = getattr(req.target, "tokenizer", None)
    mask = _marks(tok, v, chars).clone() if chars and tok is not None else torch.zeros(v, dtype=torch.bool)
    mask[list(req.stops)] = True
    return mask


def emit(req, tokens: list[int], logps: list[float]) -> list[int]:
    """Commit a method's chosen tokens: count them on the last forward, record their log p and,
    when asked, the step (a search's pick is the target's own output: no drafts to trace)."""
    if not req.stats.committed:
        req.stats.committed.append(0)
    req.stats.committed[-1] += len(tokens)
    if req.logprobs is not None:
        req.logprobs.extend(logps)
    if req.trace is not None:
        req.trace.append(StepTrace(tokens=list(tokens)))
    return tokens
