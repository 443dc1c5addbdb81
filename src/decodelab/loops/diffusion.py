"""The diffusion loop: masked diffusion decoding of one canvas. Methods supply an unmask policy
(and optionally a step schedule, a cache policy and draft verification); the loop owns the
canvas, the forwards, the commits, the counts and what each step yields.

Canvas = prompt + G mask tokens, G = max_new_tokens. It is decoded in semi-autoregressive blocks
of `block_length` positions (one block of G when None), left to right; a block ends when it has
no mask left. Each step:
  1. one forward scores the block's positions (the cache policy decides what is forwarded);
  2. core.unmask.propose gives each position a token x0 and its confidence p(x0);
  3. the policy picks which masked positions of the block to unmask (`Policy.select`);
  4. the loop writes x0 there and yields.

Cache policies (Fast-dLLM, arXiv 2505.22618), for adapters with the "kv_cache" capability:
  none    every step forwards the whole canvas
  prefix  a block's first step forwards the whole canvas and keeps the keys and values of the
          positions before the block; its later steps forward the block and everything after it
  dual    also keeps the positions after the block; later steps forward the block alone
The kept entries are computed once per block, while the block is still masked: an approximation
(bidirectional attention would update them as the block fills), exact at each block's first step.

Proposal hook (CreditDecoding arXiv 2510.06133, CCD arXiv 2512.02044): a policy may define
`propose_from(logits, masked, block, step) -> logits`, called once per forward with the block's
logits [b, V]; x0 and conf are then taken from what it returns instead of the model's logits (a
policy that carries history across steps, kept in the policy, one per generation). `View.logits`
stays the model's: log-probabilities are the model's own.

End-of-text fill (`eos_fill`): "block" (LocalLeap): once a finished block holds end-of-text,
every later position becomes end-of-text without a forward; "token" (Learn2PD's End-of-Text
Prediction): once a step commits end-of-text at some position, every masked position after it
becomes end-of-text in the same step. Filled positions count as unmasked by the step's forward;
their log-probability is 0 (a rule chose them, not a distribution).

Draft verification (FreeDave, arXiv 2510.00294), `drafts=K`, greedy only: draft j commits the
next j scheduled steps at once, ranked from this step's logits; one batched forward scores the
drafts; draft j + 1 is accepted while it equals one scheduled step of the policy taken from draft
j's logits, so the output is exactly the one-step-at-a-time output. The accepted draft's logits
carry over to the next step without a forward.

What a step yields (`Unmasked`): as a list, the tokens that became final in reading order (the
decoded prefix of the region grew by them), which is what stream() and generate() collect, cut
just after the first stop token as in every family; `.positions` / `.tokens`: what the step
unmasked, as offsets into the region and token ids in commit order (the unmasking order a UI can
draw). With stop tokens, decoding ends once the decoded prefix holds one: what follows cannot
change the output. With generate(trace=True) each step also records a StepTrace of its
reading-order tokens (nothing is drafted in the causal sense; `.positions` has the order). Counts: `stats.unmasked` gets the positions each forward unmasked, the
adapter's counter the forwards and the forwarded tokens (a cached step forwards fewer).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Protocol

import torch

from ..core import unmask
from ..core.sampling import check_finite
from ..errors import DecodeLabError
from ..types import StepTrace

CACHES = ("none", "prefix", "dual")
EOS_FILLS = ("none", "block", "token")


@dataclass(frozen=True)
class View:
    """One step as a policy sees it: the rows of the current block."""

    logits: torch.Tensor  # [b, V] float32
    x0: torch.Tensor  # [b] proposed tokens
    conf: torch.Tensor  # [b] float64 p(x0); -inf at positions already unmasked
    masked: torch.Tensor  # [b] bool
    k: int | None  # positions the step schedule asks for (None: no schedule)
    step: int  # steps taken in this block so far
    steps: int | None  # steps the schedule gives this block (None: no schedule)
    block: int
    eos: frozenset[int]  # the model's end-of-text ids (whatever the request's stops)
    rng: torch.Generator | None


class Policy(Protocol):
    def select(self, view: View) -> torch.Tensor:
        """Block-relative indices of masked positions to unmask now, in commit order (>= 1)."""


# (block size, block index) -> positions each step of that block unmasks
Schedule = Callable[[int, int], list[int]]


class Ranked:
    """Unmask the k masked positions with the highest score(view) (LLaDA's low-confidence
    remasking when the score is the confidence); k from the schedule."""

    def __init__(self, score: Callable[[View], torch.Tensor] = lambda v: v.conf):
        self.score = score

    def select(self, view: View) -> torch.Tensor:
        score = self.score(view).masked_fill(~view.masked, -float("inf"))
        return unmask.top_k(score, view.k)


class Unmasked(list):
    """What one step decoded: see the module docstring."""

    def __init__(self, tokens, positions, unmasked):
        super().__init__(tokens)
        self.positions, self.tokens = positions, unmasked


def blocks(gen_length: int, block_length: int | None) -> int:
    """The block length; refuses one that does not divide the canvas (as LLaDA asserts)."""
    b = gen_length if block_length is None else block_length
    if b > gen_length or gen_length % b:
        raise DecodeLabError(f"block_length ({b}) must divide max_new_tokens ({gen_length}), the canvas length")
    return b


def even_schedule(gen_length: int, block_length: int | None, steps: int | None) -> Schedule:
    """LLaDA's schedule: `steps` split evenly over the blocks, each block's masks split evenly
    over its steps (None: one position per step)."""
    b = blocks(gen_length, block_length)
    n_blocks = gen_length // b
    steps = gen_length if steps is None else steps
    if steps % n_blocks or steps > gen_length:
        raise DecodeLabError(f"steps ({steps}) must be a multiple of the number of blocks ({n_blocks}) and at "
                             f"most max_new_tokens ({gen_length}): a step that unmasks nothing wastes a forward")
    return lambda size, block: unmask.even_split(size, steps // n_blocks)


class _Forwards:
    """The forwards of one generation under a cache policy; returns logits at the block's rows."""

    def __init__(self, lm, cache: str):
        if cache not in CACHES:
            raise DecodeLabError(f"cache must be one of {', '.join(CACHES)}, got {cache!r}")
        if cache != "none" and "kv_cache" not in lm.capabilities:
            name = type(getattr(lm, "model", lm)).__name__
            raise DecodeLabError(f"cache={cache!r} needs a model with a KV cache (capability kv_cache); "
                                 f"{name} has none: use cache='none', or a decoder diffusion LM "
                                 "such as zoo:tasks-mdlm-llama")
        self.lm, self.cache = lm, cache

    def __call__(self, canvas: torch.Tensor, lo: int, hi: int, first: bool) -> torch.Tensor:
        n, rows = len(canvas), torch.arange(lo, hi)
        if self.cache == "none":
            return self.lm.logits(canvas, rows)
        if first:  # the whole canvas; keep what lies outside the block (dual) or before it (prefix)
            keep = torch.arange(lo) if self.cache == "prefix" else torch.cat([torch.arange(lo), torch.arange(hi, n)])
            return self.lm.logits(canvas, rows, keep=keep)
        end = n if self.cache == "prefix" else hi
        return self.lm.logits_cached(canvas[lo:end], torch.arange(lo, end), torch.arange(hi - lo))


class _Output:
    """Emission in reading order: the decoded prefix of the region, log-probabilities, stops."""

    def __init__(self, req, prompt_len: int):
        self.req, self.p = req, prompt_len
        self.front = 0  # region offsets below this are decoded and emitted
        self.logp: dict[int, float] = {}
        self.done = False

    def chunk(self, canvas, mask_id: int, positions: list[int], tokens: list[int]) -> Unmasked:
        region = canvas[self.p:].tolist()
        start = self.front
        while self.front < len(region) and region[self.front] != mask_id:
            self.front += 1
        out = region[start:self.front]
        for i, t in enumerate(out):
            if t in self.req.stops:
                out, self.done = out[: i + 1], True
                break
        self.done = self.done or self.front == len(region)
        if self.req.logprobs is not None:
            self.req.logprobs.extend(self.logp.pop(start + i) for i in range(len(out)))
        if self.req.trace is not None:  # generate(trace=True): the steps' tokens make up the output
            self.req.trace.append(StepTrace(tokens=list(out)))
        self.req.stats.committed.append(len(out))
        return Unmasked(out, positions, tokens)


def decode(req, policy: Policy, *, block_length: int | None = None, schedule: Schedule | None = None,
           cache: str = "none", drafts: int = 1, eos_fill: str = "none") -> Iterator[Unmasked]:
    """Decode req (a Request whose target is a MaskedDiffusionLM) with `policy`; see the module
    docstring. drafts > 1: FreeDave verification of up to that many scheduled steps per forward.
    Bad settings are refused here, before anything runs."""
    b = blocks(req.max_new_tokens, block_length)
    if drafts > 1 and (schedule is None or not req.greedy or cache != "none" or hasattr(policy, "propose_from")):
        raise DecodeLabError("draft verification needs a step schedule, greedy decoding, no cache and a policy "
                             "that proposes from the model's logits")
    if eos_fill not in EOS_FILLS:
        raise DecodeLabError(f"eos_fill must be one of {', '.join(EOS_FILLS)}, got {eos_fill!r}")
    if eos_fill != "none" and not req.target.eos_token_ids:
        raise DecodeLabError(f"eos_fill={eos_fill!r} needs a model with an end-of-text token")
    return _decode(req, policy, b, schedule, _Forwards(req.target, cache), drafts, eos_fill)


def _decode(req, policy, b, schedule, forward, drafts, eos_fill="none") -> Iterator[Unmasked]:
    lm, G, P = req.target, req.max_new_tokens, len(req.prompt)
    canvas = torch.cat([req.prompt, torch.full((G,), lm.mask_id, dtype=torch.long)])  # [P + G]
    out, tally = _Output(req, P), _Tally(req.stats)
    eos = frozenset(lm.eos_token_ids)
    fuse = getattr(policy, "propose_from", None)
    try:
        for block in range(G // b):
            lo, hi = P + block * b, P + (block + 1) * b
            counts = schedule(b, block) if schedule is not None else None
            step, carried = 0, None
            while bool((canvas[lo:hi] == lm.mask_id).any()):
                if carried is None:
                    tally.forward()
                    logits = forward(canvas, lo, hi, first=step == 0)  # [b, V]
                else:
                    logits, carried = carried, None
                view = _view(req, lm, canvas[lo:hi], logits, counts, step, block, eos, fuse)
                pick = _checked(policy.select(view), view)
                _commit(req, canvas, lo, view, pick, out, tally)
                step += 1
                if drafts > 1 and step < len(counts):
                    extra, more, carried = _verify(req, lm, policy, canvas, lo, hi, view, pick, counts, drafts, tally)
                    _commit(req, canvas, lo, view, extra, out, tally)
                    pick, step = torch.cat([pick, extra]), step + more
                positions, tokens = (pick + lo - P).tolist(), view.x0[pick].tolist()
                if eos_fill == "token" and eos & set(tokens):  # End-of-Text Prediction
                    first = min(p for p, t in zip(positions, tokens) if t in eos)
                    positions, tokens = _fill(req, canvas, P + first + 1, out, tally, positions, tokens)
                yield out.chunk(canvas, lm.mask_id, positions, tokens)
                if out.done:
                    return
            if eos_fill == "block" and bool((canvas[hi:] == lm.mask_id).any()) and eos & set(canvas[lo:hi].tolist()):
                yield out.chunk(canvas, lm.mask_id, *_fill(req, canvas, hi, out, tally, [], []))
                return
    finally:
        tally.close()


def _fill(req, canvas, start: int, out: "_Output", tally: "_Tally", positions: list[int], tokens: list[int]):
    """Every masked canvas position from `start` on becomes end-of-text; returns the step's
    (positions, tokens) with them appended."""
    lm, P = req.target, len(req.prompt)
    rest = (canvas[start:] == lm.mask_id).nonzero()[:, 0] + start
    eos_id = lm.eos_token_ids[0]
    canvas[rest] = eos_id
    tally.pending += len(rest)
    offsets = (rest - P).tolist()
    if req.logprobs is not None:
        out.logp.update((o, 0.0) for o in offsets)
    return positions + offsets, tokens + [eos_id] * len(offsets)


class _Tally:
    """stats.unmasked: the positions unmasked after each forward, until the next one."""

    def __init__(self, stats):
        self.stats, self.pending, self.started = stats, 0, False

    def forward(self) -> None:
        if self.started:
            self.stats.unmasked.append(self.pending)
        self.started, self.pending = True, 0

    def close(self) -> None:
        if self.started:
            self.stats.unmasked.append(self.pending)
            self.started = False


def _verify(req, lm, policy, canvas, lo, hi, view: View, pick, counts, drafts, tally):
    """FreeDave after the step `pick` (already written to canvas): draft j adds the next j
    scheduled steps, ranked from the same logits; one batched forward scores the drafts; draft
    j + 1 is kept while one step of the policy from draft j's logits gives exactly it. Returns
    (the positions the kept draft adds, the steps it takes, its logits or None when it fills the block)."""
    step = view.step + 1
    n = min(drafts - 1, len(counts) - step)  # drafts beyond the certain step
    ranked = [_checked(policy.select(replace(view, k=sum(counts[view.step:step + j]))), view)
              for j in range(1, n + 1)]
    if any(not torch.equal(r[: len(pick)], pick) for r in ranked):
        raise RuntimeError("draft verification needs a policy that ranks positions (top-k of a score)")
    cands = [canvas.clone()]  # cands[j]: the canvas after j drafted steps (cands[0]: after `pick`)
    for r in ranked:
        c = canvas.clone()
        c[lo + r] = view.x0[r]
        cands.append(c)
    scored = [c for c in cands if bool((c[lo:hi] == lm.mask_id).any())]  # a full block needs no logits
    tally.forward()
    logits = lm.logits(torch.stack(scored), torch.arange(lo, hi))  # [D, b, V]
    kept = 0
    while kept < n:
        v = _view(req, lm, cands[kept][lo:hi], logits[kept], counts, step + kept, view.block, view.eos)
        t = _checked(policy.select(v), v)
        target = cands[kept].clone()
        target[lo + t] = v.x0[t]
        if not torch.equal(target, cands[kept + 1]):
            break
        kept += 1
    extra = ranked[kept - 1][len(pick):] if kept else pick[:0]
    carried = logits[kept] if kept < len(scored) else None
    return extra, kept, carried


def _view(req, lm, block_ids, logits, counts, step, block, eos, fuse=None) -> View:
    check_finite(logits)
    masked = block_ids == lm.mask_id
    scored = logits if fuse is None else fuse(logits, masked, block, step)  # [b, V]
    x0, conf = unmask.propose(scored, req.sampling, req.rng, lm.mask_id)
    conf = conf.masked_fill(~masked, -float("inf"))
    k = counts[step] if counts is not None and step < len(counts) else None
    return View(logits, x0, conf, masked, k, step, None if counts is None else len(counts), block, eos,
                req.rng)


def _checked(pick, view: View) -> torch.Tensor:
    pick = torch.as_tensor(pick, dtype=torch.long).reshape(-1)
    if not len(pick) or len(set(pick.tolist())) != len(pick) or not bool(view.masked[pick].all()):
        raise RuntimeError("an unmask policy must pick at least one masked position of the block, each once")
    return pick


def _commit(req, canvas, lo, view: View, pick, out: _Output, tally: _Tally) -> None:
    canvas[lo + pick] = view.x0[pick]
    tally.pending += len(pick)
    if req.logprobs is not None:  # log p of each unmasked token under the logits it was chosen from
        lp = torch.log_softmax(view.logits[pick].float(), dim=-1).gather(-1, view.x0[pick][:, None])[:, 0]
        out.logp.update(zip((pick + lo - len(req.prompt)).tolist(), lp.tolist()))
