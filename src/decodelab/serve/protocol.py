"""OpenAI's request fields, checked and mapped to a decodelab Job; every refusal is a ServeError
with one clear message.

Mapping: max_tokens -> max_new_tokens; temperature 0 -> greedy, > 0 -> sampling at that
temperature, absent -> the method's default (greedy, except methods that only sample: unlike
OpenAI, whose default is 1.0, so that a plain request is reproducible); top_p, seed -> the same
names (top_p only applies when sampling); stop -> stop strings (the text ends before the stop
string, as OpenAI's); logprobs -> each token's log p under the target. The decoding method and
its options go in the extension field `decoding`: {"method": "sps", "gamma": 4, "top_k": 50,
"trace": true, "session": "abc", "ignore_eos": false}.
"""
from __future__ import annotations

import json
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import DecodeLabError
from ..registry import get
from .engine import Engine, Job, ServeError

EXTRA_SAMPLING = ("top_k", "min_p")  # decodelab sampling options OpenAI has no field for
STANDARD = {"temperature", "top_p", "seed", "do_sample", "max_tokens", "stop", "logprobs"}


class Decoding(BaseModel):
    """The extension field: the method, its options, and what to record."""

    model_config = ConfigDict(extra="allow")
    method: str | None = None
    trace: bool = False  # per-step StepTrace (drafted, accepted, bonus, rejected) in each chunk
    session: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")  # a State carried across requests
    ignore_eos: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict | None = None
    user: str | None = None
    decoding: Decoding = Field(default_factory=Decoding)

    def unsupported(self) -> list[str]:
        bad = [("n", self.n != 1, "n must be 1 (send requests concurrently for more)"),
               ("presence_penalty", self.presence_penalty != 0, "presence_penalty is not supported"),
               ("frequency_penalty", self.frequency_penalty != 0, "frequency_penalty is not supported"),
               ("logit_bias", bool(self.logit_bias), "logit_bias is not supported (decoding methods see the raw "
                                                      "logits)")]
        return [(name, why) for name, cond, why in bad if cond]

    def job(self, engine: Engine, default_max: int, prompt=None, messages=None, logprobs: bool = False) -> Job:
        for name, why in self.unsupported():
            raise ServeError(400, why, param=name, code="unsupported")
        if self.model is not None and self.model != engine.name:
            raise ServeError(404, f"model '{self.model}' is not served here; this server serves '{engine.name}'",
                             param="model", code="model_not_found")
        max_new = self.max_tokens if self.max_tokens is not None else min(default_max, engine.limits.max_tokens)
        if max_new > engine.limits.max_tokens:
            raise ServeError(400, f"max_tokens ({max_new}) exceeds this server's limit of {engine.limits.max_tokens}",
                             param="max_tokens", code="max_tokens_too_large")
        d = self.decoding
        method = d.method or engine.default_method
        spec = get_method(method)
        options = dict(d.model_extra or {})
        names = [o["name"] for o in spec.config.describe()]
        clash = sorted(set(options) & STANDARD)
        if clash:
            raise ServeError(400, f"set {', '.join(clash)} with the standard field(s), not in 'decoding'",
                             param="decoding", code="invalid_option")
        unknown = sorted(set(options) - set(names) - set(EXTRA_SAMPLING))
        if unknown:
            raise ServeError(400, f"method '{method}' has no option(s) {', '.join(unknown)}; its options: "
                                  f"{', '.join(names) or '(none)'} (and the sampling options top_k, min_p)",
                             param="decoding", code="invalid_option")
        if self.temperature is not None and self.temperature > 0:
            options.update(do_sample=True, temperature=self.temperature)
            options.update({k: v for k, v in (("top_p", self.top_p), ("seed", self.seed)) if v is not None})
        elif self.temperature == 0:
            options["do_sample"] = False
        elif "sample" in spec.modes and "greedy" not in spec.modes:  # a sampling-only method, default temperature
            options.update({k: v for k, v in (("top_p", self.top_p), ("seed", self.seed)) if v is not None})
        if not options.get("do_sample", spec.modes == ("sample",)):
            options.pop("top_k", None), options.pop("min_p", None)  # greedy ignores them, as OpenAI ignores top_p
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        if stop is not None and (len(stop) > 4 or not all(stop)):
            raise ServeError(400, "stop must be up to 4 non-empty strings", param="stop", code="invalid_stop")
        if stop and engine.tokenizer is None:
            raise ServeError(400, "stop strings need a model with a tokenizer", param="stop")
        return Job(method=method, max_new_tokens=max_new, prompt=prompt, messages=messages, options=options,
                   stop=stop or None, ignore_eos=d.ignore_eos, logprobs=logprobs, trace=d.trace, session=d.session)


Prompt = Union[str, list[int], list[str], list[list[int]]]


class CompletionRequest(_Common):
    prompt: Prompt
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def to_job(self, engine: Engine) -> Job:
        if self.echo or self.suffix or self.best_of not in (None, 1):
            name = "echo" if self.echo else "suffix" if self.suffix else "best_of"
            raise ServeError(400, f"{name} is not supported", param=name, code="unsupported")
        if self.logprobs:
            raise ServeError(400, "top alternatives are not computed: use logprobs=0 for each token's own "
                                  "log-probability", param="logprobs", code="unsupported")
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise ServeError(400, "one prompt per request (send several requests concurrently)", param="prompt")
            prompt = prompt[0]
        if not prompt:
            raise ServeError(400, "the prompt is empty", param="prompt")
        if isinstance(prompt, str) and engine.tokenizer is None:
            raise ServeError(400, "this model has no tokenizer: give the prompt as a list of token ids", param="prompt")
        return self.job(engine, 16, prompt=prompt, logprobs=self.logprobs is not None)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] | None = None
    name: str | None = None

    def as_dict(self) -> dict:
        content = self.content or ""
        if isinstance(content, list):  # content parts: text only
            if not all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise ServeError(400, "only text content parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)

    def to_job(self, engine: Engine) -> Job:
        if self.top_logprobs:
            raise ServeError(400, "top alternatives are not computed: use logprobs=true without top_logprobs",
                             param="top_logprobs", code="unsupported")
        if not getattr(engine.tokenizer, "chat_template", None):
            raise ServeError(400, f"model '{engine.name}' has no chat template; use /v1/completions, or start the "
                                  "server with --chat-template FILE", param="messages", code="no_chat_template")
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise ServeError(400, "give max_tokens or max_completion_tokens, not both", param="max_tokens")
            self.max_tokens = self.max_completion_tokens
        return self.job(engine, engine.limits.max_tokens, messages=[m.as_dict() for m in self.messages],
                        logprobs=self.logprobs)


def get_method(name: str):
    try:
        return get(name)
    except DecodeLabError as e:  # unknown method: the message lists the known ones
        raise ServeError(400, str(e), param="decoding.method", code="unknown_method") from None


def parse(model: type[BaseModel], raw: bytes) -> Any:
    """The request body as `model`, or a 400 naming the first bad field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ServeError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ServeError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ServeError(400, describe(e), param=_loc(e.errors()[0]), code="invalid_value") from None


def describe(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = _loc(err)
    if err["type"] == "extra_forbidden":
        return f"unknown field '{loc}'"
    if err["type"] == "missing":
        return f"'{loc}' is required"
    return f"invalid '{loc}': {err['msg']} (got {err.get('input')!r:.80})"


def _loc(err: dict) -> str:
    # union branches add their type names to the location; keep the field path only
    parts = [str(p) for p in err.get("loc", ()) if not (isinstance(p, str) and ("[" in p or p in
             ("str", "int", "list", "dict", "float", "bool", "none")))]
    return ".".join(parts)
