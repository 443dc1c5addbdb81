"""Rewards and verifiers: scores of a partial or complete output that search methods steer by.

A reward maps (prompt text, output text, done) to a score in [0, 1], 1 meaning "satisfies
everything"; `done` says whether the output is complete (it ended with a stop token or used its
whole budget), so a reward can tell "not violated yet" from "satisfied". `batch()` scores many
outputs of one prompt at once (a model-based reward runs one forward for all of them; the
programmatic ones loop). `delimiters` are the characters that end one step of the reward's
process (A*-decoding splits its states there): newline by default, "," and newline for the
arithmetic step checker, whose steps are comma-separated.

Programmatic: `Keywords` (present or absent), `Length` (a window in chars, words or lines),
`Regex`, `Arithmetic` (the zoo arithmetic task's step checker), `Function` (any Python callable
`(prompt, text) -> float | bool`). Model-based: `Classifier` (a transformers sequence
classifier's probability of a label) and `Likelihood` (a causal LM's per-token geometric-mean
probability of the output). `All` averages several (spec `A&B`).

Specs, for the CLI (`--reward keywords:return,yield`) and bench rows (`astar:reward=arithmetic`;
rows split options at commas, so lists there take `|`):

    arithmetic                  every written step a op b = c, and the final answer, correct
    keywords:W1,W2,!W3          W1 and W2 present, W3 absent (whole words); score = share satisfied
    length:LO,HI[,UNIT]         LO <= length <= HI, UNIT chars | words (default) | lines
    regex:PATTERN               the pattern occurs (re.search); everything after 'regex:' is the pattern,
                                so a regex joined with others comes last
    classifier:DIR[@LABEL]      a sequence-classification model directory, P(LABEL) (default: the last label)
    likelihood:MODEL            exp(mean log p(output | prompt)) under a causal LM (a directory or zoo:NAME)
    SPEC&SPEC                   the mean of the parts
    task                        in bench rows only: the workload's own checker (arithmetic for
                                tasks:arithmetic, the constraint of the constraints workloads)

A model without a tokenizer has no text: there a reward reads the token ids joined by spaces.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Sequence

import torch

from .errors import DecodeLabError
from .options import option


class Reward:
    """Base class: implement `score`, or `batch` when scoring many outputs at once is cheaper."""

    delimiters: str = "\n"

    def score(self, prompt: str, text: str, done: bool) -> float:
        raise NotImplementedError

    def batch(self, prompt: str, texts: Sequence[str], done: Sequence[bool]) -> list[float]:
        return [float(self.score(prompt, t, d)) for t, d in zip(texts, done)]

    def __and__(self, other: "Reward") -> "All":
        return All([self, other])


class Keywords(Reward):
    """Share of the constraints satisfied: each word in `present` occurs, each in `absent` does not
    (whole-word, case-sensitive). On a partial output a missing word may still come."""

    def __init__(self, present: Sequence[str] = (), absent: Sequence[str] = ()):
        if not present and not absent:
            raise DecodeLabError("keywords: give at least one word (keywords:return,yield,!print)")
        self.present, self.absent = list(present), list(absent)
        self._res = {w: re.compile(rf"(?<!\w){re.escape(w)}(?!\w)") for w in self.present + self.absent}

    def score(self, prompt, text, done):
        ok = sum(bool(self._res[w].search(text)) for w in self.present)
        ok += sum(not self._res[w].search(text) for w in self.absent)
        return ok / (len(self.present) + len(self.absent))


UNITS = ("chars", "words", "lines")


class Length(Reward):
    """1 when lo <= length <= hi. A partial output scores 1 while it is not above hi (it can
    still grow into the window), 0 once it is."""

    def __init__(self, lo: int = 0, hi: int | None = None, unit: str = "words"):
        if unit not in UNITS:
            raise DecodeLabError(f"length: unit must be one of {', '.join(UNITS)}, got {unit!r}")
        if lo < 0 or (hi is not None and hi < lo):
            raise DecodeLabError(f"length: need 0 <= lo <= hi, got lo={lo}, hi={hi}")
        self.lo, self.hi, self.unit = lo, hi, unit

    def measure(self, text: str) -> int:
        if self.unit == "chars":
            return len(text)
        if self.unit == "words":
            return len(text.split())
        return len(text.splitlines())

    def score(self, prompt, text, done):
        n = self.measure(text)
        if self.hi is not None and n > self.hi:
            return 0.0
        return 1.0 if n >= self.lo or not done else 0.0


class Regex(Reward):
    """1 when the pattern occurs in the output (re.search), else 0."""

    def __init__(self, pattern: str):
        try:
            self.pattern = re.compile(pattern)
        except re.error as e:
            raise DecodeLabError(f"regex: bad pattern {pattern!r}: {e}") from None

    def score(self, prompt, text, done):
        return 1.0 if self.pattern.search(text) else 0.0


_CALC = re.compile(r"calc:\s*(\d+(?:\s*[+-]\s*\d+)+)\s*=>")
_STEP = re.compile(r"\s*(\d+)\s*([+-])\s*(\d+)\s*=\s*(-?\d+)\s*")
_ANSWER = re.compile(r"\s*answer\s+(-?\d+)\s*")


class Arithmetic(Reward):
    """The zoo arithmetic task's step checker (decodelab.zoo.tasks): the output is
    `a+b=c, c-d=e, answer e` on one line, each step written out.

    Each complete step (a piece followed by ',' or the end of the line) is verified: with the
    prompt's expression (`calc: 23+45-12 =>`), step i must apply the i-th operator and operand to
    the previous result and get it right; without one, every written `a op b = c` must be true.
    The answer must repeat the last result after all steps. Any wrong or malformed piece scores 0;
    otherwise the score is (pieces verified + 1) / (pieces expected + 1), pieces = steps + answer:
    it grows with progress, is 1 for a complete, correct solution, and is above 0 for an output
    with nothing wrong yet (even an empty one), so a search can tell a wrong step from no step.
    A complete output (done) that stops before its answer scores 0. Without the prompt's
    expression the progress is unknown: 1 while nothing is wrong.
    """

    delimiters = ",\n"

    def score(self, prompt, text, done):
        m = _CALC.search(prompt)
        nums = [int(x) for x in re.findall(r"\d+", m.group(1))] if m else None
        ops = re.findall(r"[+-]", m.group(1)) if m else None
        line, newline, _ = text.partition("\n")
        pieces = line.split(",")
        complete = pieces if (newline or done) else pieces[:-1]
        acc = nums[0] if nums else None
        verified, answered = 0, False
        for i, piece in enumerate(complete):
            step, ans = _STEP.fullmatch(piece), _ANSWER.fullmatch(piece)
            if answered or not (step or ans):
                return 0.0  # something after the answer, or not a step at all
            if step:
                a, op, b, c = int(step[1]), step[2], int(step[3]), int(step[4])
                if nums is not None and not (i < len(ops) and a == acc and op == ops[i] and b == nums[i + 1]):
                    return 0.0
                if c != (a + b if op == "+" else a - b):
                    return 0.0
                acc = c
            else:
                if acc is None or int(ans[1]) != acc or (ops is not None and i != len(ops)):
                    return 0.0
                answered = True
            verified += 1
        if done and not answered:
            return 0.0
        if ops is None:
            return 1.0
        return (verified + 1) / (len(ops) + 2)


class Function(Reward):
    """Any Python callable `(prompt, text) -> float | bool`, clipped to [0, 1]."""

    def __init__(self, fn: Callable, delimiters: str = "\n"):
        self.fn, self.delimiters = fn, delimiters

    def score(self, prompt, text, done):
        value = self.fn(prompt, text)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise DecodeLabError(f"a reward function must return a number or bool, got {value!r}") from None
        if math.isnan(value):
            raise DecodeLabError("a reward function returned NaN")
        return min(1.0, max(0.0, value))


class All(Reward):
    """The mean of several rewards (1 only when every part is 1)."""

    def __init__(self, parts: Sequence[Reward]):
        self.parts = [q for p in parts for q in (p.parts if isinstance(p, All) else [p])]
        self.delimiters = "".join(dict.fromkeys("".join(p.delimiters for p in self.parts)))

    def batch(self, prompt, texts, done):
        scores = [p.batch(prompt, texts, done) for p in self.parts]
        return [sum(col) / len(col) for col in zip(*scores)]

    def score(self, prompt, text, done):
        return self.batch(prompt, [text], [done])[0]


class Classifier(Reward):
    """P(label) under a transformers sequence-classification model (sigmoid for one logit),
    all outputs in one padded batch. `with_prompt`: classify prompt + output, not the output alone."""

    def __init__(self, model, tokenizer=None, label: int = -1, with_prompt: bool = False):
        self.model = model.eval()
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if self.tokenizer is None:
            raise DecodeLabError("a classifier reward needs the classifier's tokenizer")
        self.label, self.with_prompt = label, with_prompt

    @torch.inference_mode()
    def batch(self, prompt, texts, done):
        inputs = [prompt + t if self.with_prompt else t for t in texts]
        if self.tokenizer.pad_token is None:  # no padding: one text at a time
            return [self._probs([x])[0] for x in inputs]
        return self._probs(inputs)

    def _probs(self, inputs: list[str]) -> list[float]:
        enc = self.tokenizer(inputs, return_tensors="pt", padding=True)
        dev = next(self.model.parameters()).device
        logits = self.model(**{k: v.to(dev) for k, v in enc.items()}).logits.float()  # [B, labels]
        if logits.shape[-1] == 1:
            return torch.sigmoid(logits[:, 0]).tolist()
        return torch.softmax(logits, -1)[:, self.label].tolist()

    def score(self, prompt, text, done):
        return self.batch(prompt, [text], [done])[0]


class Likelihood(Reward):
    """exp(mean log p(output | prompt)): the per-token geometric-mean probability of the output
    under a causal LM (a judge model, or the target itself), teacher-forced, all outputs in one
    right-padded batch. An empty output scores 1."""

    def __init__(self, model, tokenizer=None):
        from .models.base import CausalLM

        if isinstance(model, CausalLM):
            model, tokenizer = model.model, tokenizer or model.tokenizer
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer is None:
            raise DecodeLabError("a likelihood reward needs the model's tokenizer")

    @torch.inference_mode()
    def batch(self, prompt, texts, done):
        tok = self.tokenizer
        ctx = tok(prompt, add_special_tokens=False)["input_ids"]
        if not ctx:  # the first output token needs something to be predicted from
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            if start is None:
                raise DecodeLabError("a likelihood reward with an empty prompt needs a BOS or EOS token")
            ctx = [start]
        outs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = len(ctx) + max((len(o) for o in outs), default=0)
        ids = torch.zeros(len(outs), width, dtype=torch.long)
        mask = torch.zeros(len(outs), width, dtype=torch.long)
        for i, o in enumerate(outs):
            ids[i, :len(ctx) + len(o)] = torch.tensor(ctx + o)
            mask[i, :len(ctx) + len(o)] = 1
        dev = next(self.model.parameters()).device
        logp = torch.log_softmax(self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float(), -1)
        got = logp[:, :-1].gather(-1, ids[:, 1:, None].to(dev))[..., 0]  # [B, W-1]: log p of token t+1
        scores = []
        for i, o in enumerate(outs):
            part = got[i, len(ctx) - 1:len(ctx) - 1 + len(o)]
            scores.append(float(torch.exp(part.mean())) if len(o) else 1.0)
        return scores

    def score(self, prompt, text, done):
        return self.batch(prompt, [text], [done])[0]


# -- specs -------------------------------------------------------------------------------------

KINDS = ("arithmetic", "keywords", "length", "regex", "classifier", "likelihood")
TASK = "task"  # a bench row's placeholder for its workload's checker (bench.runner substitutes it)


def parse(spec: str, load: bool = True) -> Reward | None:
    """The reward a spec names. load=False only checks the spec (no model is loaded; returns None
    for model-based parts)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DecodeLabError(f"a reward spec must be a non-empty string, got {spec!r}")
    head, sep, pattern = spec.partition("regex:")
    if sep and (not head or head.endswith("&")):  # everything after 'regex:' is the pattern
        if not head:
            return Regex(pattern)
        rest = parse(head[:-1], load)
        return All([rest, Regex(pattern)]) if load else None
    parts = [p.strip() for p in spec.split("&")]
    if len(parts) > 1:
        rewards = [parse(p, load) for p in parts]
        return All(rewards) if load else None
    kind, _, arg = spec.strip().partition(":")
    args = [a.strip() for a in re.split(r"[,|]", arg)] if arg else []
    if spec.strip() == TASK:
        if load:
            raise DecodeLabError("reward=task names a bench workload's own checker; outside the bench give the "
                                 "reward itself (e.g. arithmetic)")
        return None
    if kind == "arithmetic":
        if arg:
            raise DecodeLabError("the arithmetic reward takes no arguments")
        return Arithmetic()
    if kind == "keywords":
        words = [a for a in args if a and a != "!"]
        return Keywords([w for w in words if not w.startswith("!")], [w[1:] for w in words if w.startswith("!")])
    if kind == "length":
        return _length(args)
    if kind in ("classifier", "likelihood"):
        if not arg:
            raise DecodeLabError(f"{kind}: give a model ({kind}:DIR)")
        return _model_reward(kind, arg) if load else None
    raise DecodeLabError(f"unknown reward '{kind}'; known: {', '.join(KINDS)} (join with &)")


def _length(args: list[str]) -> Length:
    if len(args) not in (2, 3):
        raise DecodeLabError("length takes LO,HI[,UNIT], e.g. length:1,40,words")
    try:
        lo, hi = int(args[0]), int(args[1])
    except ValueError:
        raise DecodeLabError(f"length: LO and HI must be integers, got {args[0]!r}, {args[1]!r}") from None
    return Length(lo, hi, args[2] if len(args) == 3 else "words")


def _model_reward(kind: str, arg: str) -> Reward:
    from .api import load

    if kind == "likelihood":
        return Likelihood(load(arg))
    path, _, label = arg.partition("@")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001  (any load failure means: not a classifier directory)
        raise DecodeLabError(f"classifier: could not load a sequence classifier from '{path}': "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    try:
        index = int(label) if label else -1
    except ValueError:
        index = model.config.label2id.get(label)
        if index is None:
            labels = ", ".join(model.config.label2id)
            raise DecodeLabError(f"classifier: no label {label!r}; labels: {labels}") from None
    return Classifier(model, tokenizer, index)


def resolve(reward) -> Reward | None:
    """A Reward from a spec string, a Reward, a callable (prompt, text) -> float, or None."""
    if reward is None or isinstance(reward, Reward):
        return reward
    if isinstance(reward, str):
        return parse(reward)
    if callable(reward):
        return Function(reward)
    raise DecodeLabError(f"reward must be a spec string, a decodelab.rewards.Reward or a callable, got "
                         f"{type(reward).__name__}")


def reward_option(help: str):
    """The `reward` field of a search method's config: a spec string (CLI, bench rows) or, from
    Python, a Reward or a callable."""
    return option(None, help + "; a spec (arithmetic, keywords:W,!W, length:LO,HI[,UNIT], regex:P, "
                  "classifier:DIR, likelihood:MODEL; join with &) or, from Python, a decodelab.rewards.Reward "
                  "or a callable (prompt, text) -> float", objects=(Reward, Callable))


def check(reward) -> None:
    """Refuse a malformed spec when a config is built (model-based parts are loaded only to run)."""
    if isinstance(reward, str):
        parse(reward, load=False)


def texts(target, prompt_ids, outputs: Sequence[Sequence[int]]) -> tuple[str, list[str]]:
    """The prompt and the outputs as a reward reads them: decoded without special tokens, or the
    token ids joined by spaces for a model without a tokenizer."""
    tok = getattr(target, "tokenizer", None)
    ids = [int(t) for t in prompt_ids]
    if tok is None:
        return " ".join(map(str, ids)), [" ".join(map(str, o)) for o in outputs]
    return tok.decode(ids, skip_special_tokens=True), tok.batch_decode([list(o) for o in outputs],
                                                                      skip_special_tokens=True)
