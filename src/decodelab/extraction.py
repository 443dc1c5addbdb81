"""exact-extract: the most probable span of a context under the model, computed exactly.

Castel et al. 2022, "How Optimal is Greedy Decoding for Extractive Question Answering?"
(AKBC 2022, arXiv 2108.05857). In extractive question answering the answer is a span of the
context. The model reads the prompt (the context, then the question when there is one) and an
answer a = c[i:j] scores

    log p(a, end | prompt) = sum_{t=i}^{j-1} log p(c_t | prompt, c_i..c_{t-1}) + log p(end | prompt, c_i..c_{j-1})

where `end` is the end-of-answer marker (end of sequence by default, or a newline, ...). Greedy
decoding may leave the context or miss the best span; exact-extract takes the argmax over every
span of at most `max_answer_len` tokens, exactly. One teacher-forced forward of the context's
suffix c_i..c_{i+L-1} after the cached prompt gives, at once, the log p of every span starting at
i and of the end marker after each of them; all starts run as rows of one batch (chunked to
`batch_tokens` tokens a forward). Cost: the prompt once, then about S x L tokens in
ceil(S L / batch_tokens) forwards, against one forward of the prompt and span per span (S x L
forwards) for the brute force, `extract_brute_force`, which tests and the bench compare with.

Choices: spans are token spans of the context as tokenized on its own (the prompt is built from
the same ids, so every span is exactly a piece of what the model read); the end marker is one
token, or several alternatives whose probabilities add (log-sum-exp); a context token that is
itself an end marker may still be inside a span.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import DecodeLabError


@dataclass
class Span:
    tokens: list[int]
    text: str | None
    start: int  # first token of the span in the context
    end: int  # one past its last token
    logprob: float  # log p(span, end | prompt)


@dataclass
class Extraction:
    best: Span
    top: list[Span]  # the top_k spans, best first
    spans: int  # spans scored
    forwards: int  # target forwards, the prompt's included
    tokens_scored: int  # tokens the target scored, the prompt's included

    @property
    def text(self) -> str | None:
        return self.best.text


def extract(model, context, question=None, *, max_answer_len: int = 15, top_k: int = 1, end=None,
            batch_tokens: int = 1024, tokenizer=None) -> Extraction:
    """The most probable span of `context` (text, or token ids) as the answer after reading the
    context and then `question` (include your own separators, e.g. "\\nQ: who? A:"). end: the
    end-of-answer marker: None (the model's end-of-sequence tokens), a string of one token, or a
    list of token ids (alternatives)."""
    from .api import _adapt

    target = _adapt(model, tokenizer).fresh()
    prompt, ctx = _prompt(target, context, question)
    ends = _ends(target, end)
    max_answer_len, top_k, batch_tokens = (_positive(n, v) for n, v in
                                           (("max_answer_len", max_answer_len), ("top_k", top_k),
                                            ("batch_tokens", batch_tokens)))
    if target.max_length is not None and len(prompt) + min(max_answer_len, len(ctx)) > target.max_length:
        raise DecodeLabError(f"the prompt ({len(prompt)} tokens) and answers of up to {max_answer_len} tokens "
                             f"exceed the model's context of {target.max_length}")
    scores = span_scores(target, prompt, ctx, ends, max_answer_len, batch_tokens)  # [S, L]
    flat = scores.flatten()
    order = torch.topk(flat, min(top_k, int(torch.isfinite(flat).sum()))).indices.tolist()
    top = [_span(target, ctx, i // scores.shape[1], i // scores.shape[1] + i % scores.shape[1] + 1, float(flat[i]))
           for i in order]
    c = target.counter
    return Extraction(top[0], top, int(torch.isfinite(flat).sum()), c.forwards + c.prefill_forwards,
                      c.tokens + c.prefill_tokens)


@torch.inference_mode()
def span_scores(target, prompt: list[int], ctx: list[int], ends: list[int], max_len: int,
                batch_tokens: int) -> torch.Tensor:
    """[S, L] log p(ctx[i:i+l+1], end | prompt) at [i, l]; -inf where the span leaves the context."""
    s, width = len(ctx), min(max_len, len(ctx))
    target.reset()
    head = torch.log_softmax(target.forward(torch.tensor(prompt), torch.arange(len(prompt))).logits[-1].float(), -1)
    c = torch.tensor(ctx + [ctx[-1]] * width)  # padded so every row has `width` tokens
    rows = c.unfold(0, width, 1)[:s]  # [S, L]: row i = ctx[i : i + L] (padding past the end)
    out = torch.full((s, width), float("-inf"))
    per = max(1, batch_tokens // width)
    for lo in range(0, s, per):
        chunk = rows[lo:lo + per]  # [R, L]
        target.truncate(len(prompt))
        target.select(torch.zeros(len(chunk), dtype=torch.long))
        pos = torch.arange(len(prompt), len(prompt) + width).repeat(len(chunk), 1)
        logp = torch.log_softmax(target.forward(chunk, pos).logits.float(), -1)  # [R, L, V]
        target.select(torch.zeros(1, dtype=torch.long))
        inside = logp[:, :-1].gather(-1, chunk[:, 1:, None])[..., 0]  # [R, L-1]: log p(c_{i+t} | ..c_{i+t-1})
        path = torch.cat([head[chunk[:, :1]], inside], dim=1).cumsum(1)  # [R, L]: log p(c_i..c_{i+l})
        out[lo:lo + len(chunk)] = path + torch.logsumexp(logp[..., ends], dim=-1)
    valid = torch.arange(s)[:, None] + torch.arange(width)[None, :] < s  # [S, L]
    return out.masked_fill(~valid, float("-inf"))


@torch.inference_mode()
def extract_brute_force(model, context, question=None, *, max_answer_len: int = 15, end=None,
                        tokenizer=None) -> tuple[torch.Tensor, int, int]:
    """The reference: every span scored by its own forward of prompt + span, no cache.
    Returns ([S, L] scores as span_scores, forwards, tokens scored)."""
    from .api import _adapt

    target = _adapt(model, tokenizer).fresh()
    prompt, ctx = _prompt(target, context, question)
    ends = _ends(target, end)
    s, width = len(ctx), min(max_answer_len, len(ctx))
    out, forwards, tokens = torch.full((s, width), float("-inf")), 0, 0
    for i in range(s):
        for length in range(1, min(width, s - i) + 1):
            ids = prompt + ctx[i:i + length]
            target.reset()
            logp = torch.log_softmax(target.forward(torch.tensor(ids), torch.arange(len(ids))).logits.float(), -1)
            span = torch.tensor(ids[len(prompt):])
            inside = logp[len(prompt) - 1:-1].gather(-1, span[:, None]).sum()
            out[i, length - 1] = inside + torch.logsumexp(logp[-1, ends], dim=-1)
            forwards, tokens = forwards + 1, tokens + len(ids)
    return out, forwards, tokens


def _prompt(target, context, question) -> tuple[list[int], list[int]]:
    """(prompt ids, context ids): the prompt is [BOS if the tokenizer adds one] + context + question."""
    from .api import _adds_bos

    tok = target.tokenizer

    def ids(x, what):
        if isinstance(x, str):
            if tok is None:
                raise DecodeLabError(f"this model has no tokenizer: give the {what} as token ids")
            return tok(x, add_special_tokens=False)["input_ids"]
        try:
            return [int(t) for t in x]
        except TypeError:
            raise DecodeLabError(f"the {what} must be a string or a list of token ids") from None

    ctx = ids(context, "context")
    if not ctx:
        raise DecodeLabError("the context is empty: there is no span to extract")
    bad = [t for t in ctx if not 0 <= t < target.vocab_size]
    if bad:
        raise DecodeLabError(f"context token id(s) {bad[:5]} outside the vocabulary [0, {target.vocab_size})")
    q = ids(question, "question") if question is not None else []
    bos = [tok.bos_token_id] if tok is not None and tok.bos_token_id is not None and _adds_bos(tok) else []
    return bos + ctx + q, ctx


def _ends(target, end) -> list[int]:
    if end is None:
        ends = list(target.eos_token_ids)
        if not ends:
            raise DecodeLabError("this model has no end-of-sequence token: give the end-of-answer marker (end=...)")
        return ends
    if isinstance(end, str):
        if target.tokenizer is None:
            raise DecodeLabError("this model has no tokenizer: give end as token ids")
        ids = target.tokenizer(end, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise DecodeLabError(f"the end marker must be one token; {end!r} is {len(ids)} tokens")
        return ids
    ends = [int(t) for t in end]
    if not ends or any(not 0 <= t < target.vocab_size for t in ends):
        raise DecodeLabError(f"end must be token ids in [0, {target.vocab_size}), got {end!r}")
    return ends


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DecodeLabError(f"{name} must be a positive integer, got {value!r}")
    return value


def _span(target, ctx: list[int], start: int, stop: int, logprob: float) -> Span:
    tokens = ctx[start:stop]
    text = target.tokenizer.decode(tokens) if target.tokenizer is not None else None
    return Span(tokens, text, start, stop, logprob)
