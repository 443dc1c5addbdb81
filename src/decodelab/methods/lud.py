"""LUD: Lexical Unit Decoding, a model fine-tuned to emit a unit of tokens per step (lossy, as
published; `lud_lossless` verifies the unit with the unmodified target).

Paper: Sun et al. 2024, "Decoding at the Speed of Thought: Harnessing Parallel Decoding of Lexical
Units for LLMs" (LREC-COLING 2024, arXiv 2405.15208); reported +33% speed on text with no loss,
+30% on code with about 3% quality loss.

Notation: k = lookahead (tokens predicted per step), beta = `threshold`, the LUD model = a copy of
the target fine-tuned by `decodelab train lud` on data where the inner tokens of each lexical unit
(a span the target predicts with p >= alpha) are replaced by a placeholder (train/lud.py). It is
passed as the `draft` model (zoo:code-target-lud for zoo:code-target, zoo:tasks-ar-lud for zoo:tasks-ar).

Each step the LUD model forwards [the committed tokens its cache lacks (at least the last one),
k - 1 placeholders] and predicts k tokens y_1 .. y_k (y_1 from the real context, y_j from the
(j-1)-th placeholder). Adaptive span acceptance: l = max(1, m), m = the number of leading
predictions whose probability is >= beta. The placeholders of every committed token but the last
stay in the LUD model's cache (the unit's inner tokens are seen as placeholders, as in training);
the last one is forwarded as a real token next step.

- `lud` (lossy): the LUD model decodes alone and emits y_1 .. y_l (greedy: argmax; sampling: each
  y_j drawn from its processed distribution, confidence = its probability there). The target is not
  run: the bench reads quality against it. Log-probabilities are the LUD model's.
- `lud_lossless`: y_1 .. y_l is a draft chain for the shared speculative loop; the unmodified target
  verifies it (greedy verify; exact rejection sampling). When sampling, y_1 is drafted from q_1 and
  y_j (j > 1) is kept only if q_j(y_j) >= beta, so its proposal distribution is q_j restricted to
  {v : q_j(v) >= beta} and renormalised: that is the q row the loop verifies with, which keeps the
  sampling exact. Lossless for greedy and sampling, with any draft model.

Deviations: the paper's repetition control is not implemented; the placeholder is the LUD model's
(`config.lud.placeholder_id`), else the tokenizer's pad token, else the draft's last vocabulary id
(a model not trained for LUD then predicts noise after placeholders: lossless stays exact, only
slower); beta defaults to the alpha the model was trained with (`config.lud.alpha`, else 0.9).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.sampling import check_finite, sample
from ..core.tree import Draft, TokenTree
from ..errors import DecodeLabError
from ..loops import speculative
from ..loops.common import emit, processor, start
from ..loops.drafting import DraftModelDrafter
from ..options import Options, option
from ..registry import register

DEFAULT_LOOKAHEAD, DEFAULT_THRESHOLD = 4, 0.9  # for a draft without an LUD config


@dataclass(frozen=True, kw_only=True)
class LUDConfig(Options):
    lookahead: int | None = option(None, "k: tokens predicted per step, with k - 1 placeholders (None: the LUD "
                                         "model's training lookahead)", lo=1, hi=64)
    threshold: float | None = option(None, "beta: emit the leading predictions with probability >= beta (at least "
                                           "one); None: the model's training alpha; 0: all k", lo=0, hi=1)
    placeholder: int | None = option(None, "placeholder token id (None: the LUD model's, else the pad token)", lo=0)


def lud_settings(model, config: LUDConfig) -> tuple[int, float, int]:
    """(lookahead, threshold, placeholder) from the config, else the LUD model's own config.lud."""
    lud = getattr(getattr(getattr(model, "model", None), "config", None), "lud", None) or {}
    k = config.lookahead or int(lud.get("lookahead", DEFAULT_LOOKAHEAD))
    beta = config.threshold if config.threshold is not None else float(lud.get("alpha", DEFAULT_THRESHOLD))
    ph = config.placeholder
    if ph is None:
        ph = lud.get("placeholder_id")
    if ph is None:
        ph = getattr(getattr(model, "tokenizer", None), "pad_token_id", None)
    ph = model.vocab_size - 1 if ph is None else int(ph)
    if ph >= model.vocab_size:
        raise DecodeLabError(f"lud: placeholder id {ph} is past the LUD model's vocabulary of {model.vocab_size}")
    if "rewind" not in model.capabilities:
        raise DecodeLabError(f"lud: the LUD model ({type(model).__name__}) cannot drop cached tokens (capability "
                             "rewind), which keeping a unit's placeholders needs")
    return k, beta, ph


class Units:
    """The LUD model and its cache: the committed tokens, a unit's inner tokens as placeholders."""

    def __init__(self, model, prompt: torch.Tensor, placeholder: int):
        self.model, self.placeholder = model, placeholder
        start(model, prompt)  # the cache holds prompt[:-1]; the last token is the first step's root
        self.seen = len(prompt) - 1  # committed tokens the cache stands for
        self._new = self._n = None  # the last forward: real tokens in it, predictions made

    def predict(self, ctx: torch.Tensor, n: int) -> torch.Tensor:
        """Logits of the n tokens after ctx: forward [ctx[seen:], n - 1 placeholders]. -> [n, V]"""
        new = ctx[self.seen:]
        ids = torch.cat([new, torch.full((n - 1,), self.placeholder, dtype=new.dtype)])
        logits = self.model.forward(ids, torch.arange(self.seen, self.seen + len(ids))).logits
        self._new, self._n = len(new), n
        return logits[len(new) - 1:]

    def keep(self, committed: int) -> None:
        """`committed` tokens followed the last forward's context: keep the real tokens and the
        placeholders of all committed tokens but the last (which is forwarded for real next)."""
        if self._new is None:
            return
        ph = min(max(committed - 1, 0), self._n - 1)
        self.model.commit(list(range(self._new + ph)))
        self.seen += self._new + ph
        self._new = self._n = None


def span(conf: torch.Tensor, threshold: float) -> int:
    """l = max(1, m): m = the leading entries of conf [n] that are >= threshold."""
    below = (conf < threshold).nonzero()
    return max(1, int(below[0]) if len(below) else len(conf))


def lossy(req, config: LUDConfig):
    k, beta, ph = lud_settings(req.draft, config)
    units = Units(req.draft, req.prompt, ph)
    probs = processor(req)
    ctx, new = req.prompt.clone(), 0
    while True:
        logits = units.predict(ctx, min(k, req.max_new_tokens - new))  # [n, V]
        check_finite(logits)
        if req.greedy:
            p = torch.softmax(logits.float(), dim=-1)
            tokens = p.argmax(-1)  # [n]
        else:
            p = probs(logits)
            tokens = sample(p, req.rng)
        conf = p.gather(-1, tokens[:, None]).squeeze(-1)  # [n]
        out, done = emit(req, tokens[:span(conf, beta)].tolist(), new, logits)
        units.keep(len(out))
        ctx = torch.cat([ctx, torch.tensor(out, dtype=ctx.dtype)])
        new += len(out)
        yield out
        if done:
            return


class UnitDrafter(DraftModelDrafter):
    """The LUD model's unit as a draft chain (q rows as the module docstring says)."""

    def __init__(self, req, config: LUDConfig):
        super().__init__(req)
        self.k, self.beta, ph = lud_settings(req.draft, config)
        self.units = Units(req.draft, req.prompt, ph)

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        n = min(self.k, max_depth)
        if n == 0:
            return Draft(TokenTree.chain([int(ctx[-1])]))
        logits = self.logits(self.units.predict(ctx, n))  # [n, shared]
        if not self.sampling.do_sample:
            p = torch.softmax(logits.float(), dim=-1)
            tokens = p.argmax(-1)
            d = span(p.gather(-1, tokens[:, None]).squeeze(-1), self.beta)
            return Draft(TokenTree.chain([int(ctx[-1])] + tokens[:d].tolist()))
        q = self.q(logits)  # [n, V]
        tokens = sample(q, self.rng)
        d = span(q.gather(-1, tokens[:, None]).squeeze(-1), self.beta)
        rows = q[:d].clone()
        rows[1:] = torch.where(rows[1:] >= self.beta, rows[1:], 0.0)  # y_j (j > 1) was kept only from this set
        rows[1:] /= rows[1:].sum(-1, keepdim=True)
        chain = TokenTree.chain([int(ctx[-1])] + tokens[:d].tolist())
        return Draft(chain, torch.cat([rows, torch.zeros(1, self.vocab)]))  # [d + 1, V]

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        self.units.keep(len(path))  # the accepted draft tokens and the bonus


@register("lud", family="autoregressive", config=LUDConfig, lossless=None, draft=True)
def run(req, config: LUDConfig):
    return lossy(req, config)


@register("lud_lossless", family="speculative", config=LUDConfig, lossless="sampling", draft=True,
          budget="lookahead", peer="hf:assisted")
def run_lossless(req, config: LUDConfig):
    return speculative.decode(req, UnitDrafter(req, config))
