"""load(), generate(), stream(), methods(): the public API, and every input check it owes users.

Every generation runs on adapters with caches of their own (`fresh()`: the same weights, a new
KV cache and counter), so generations on one loaded model are independent: two `stream()`
iterators may be advanced in turn. What a method learns across generations lives only in the
`State` the caller passes (decodelab.state).
"""
from __future__ import annotations

import dataclasses
import functools
import operator
import os
import warnings
from pathlib import Path
from typing import Iterator

import torch

from .core.sampling import SamplingConfig
from .errors import DecodeLabError
from .models.base import CausalLM, MaskedDiffusionLM
from .models.hf import HFCausalLM
from .registry import Method, all_methods, get
from .request import Request
from .state import State
from .types import DecodeOutput, DecodeStats

_SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingConfig)}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def methods() -> dict[str, dict]:
    """name -> {family, lossless, needs, modes, summary, peer, options} for every registered method."""
    return {name: m.describe() for name, m in all_methods().items()}


BACKENDS = ("auto", "torch", "llamacpp")


def load(path_or_name: str | os.PathLike, *, device: str = "cpu", dtype: torch.dtype | str = torch.float32,
         trust_remote_code: bool = False, backend: str = "auto") -> CausalLM:
    """Load a model as an adapter exposing `.model` and `.tokenizer`: HFCausalLM for causal LMs,
    HFDiffusionLM for masked (diffusion) LMs (architectures ending in ...ForMaskedLM).

    Accepts a local model directory (a directory without tokenizer files loads too; prompts are
    then token ids), `zoo:NAME` for a bundled zoo model, or a hub name where a hub is reachable.
    dtype: a torch dtype or its name (float32, bfloat16, float16). Weights load from safetensors
    only; remote code runs only with trust_remote_code=True.

    backend: "torch" (transformers), "llamacpp" (llama.cpp through llama-cpp-python, the
    LlamaCppLM adapter: a model directory or zoo name is converted once to an f32 GGUF, cached) or
    "auto" (a .gguf file runs on llama.cpp, anything else on torch).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if backend not in BACKENDS:
        raise DecodeLabError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    src = str(path_or_name)
    if backend == "llamacpp" or (backend == "auto" and src.endswith(".gguf")):
        return _load_llamacpp(src, device, dtype)
    if src.endswith(".gguf"):
        raise DecodeLabError(f"'{src}' is a GGUF file, which runs on the llama.cpp backend (backend='llamacpp')")
    dtype = _dtype(dtype)
    if src.startswith("zoo:"):
        from . import zoo

        src = str(zoo.resolve(src[4:]))
    local = Path(src).expanduser()
    _check_source(src, local)
    try:
        config = AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001  (hub, parse and remote-code errors all mean "not a model")
        raise DecodeLabError(f"'{src}' is not a loadable model: {_first_line(e)}") from None
    from .models.hf_diffusion import HFDiffusionLM, is_masked_diffusion

    if is_masked_diffusion(config):  # a masked diffusion LM: its own adapter, for the diffusion loop
        return HFDiffusionLM.from_pretrained(src, device=device, dtype=dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(src, config=config, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code).to(device)
    except Exception as e:  # noqa: BLE001
        raise DecodeLabError(f"could not load model weights from '{src}': {_first_line(e)}") from None
    tokenizer = None
    if not local.exists() or any((local / f).is_file() for f in _TOKENIZER_FILES):
        try:
            tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
        except Exception as e:  # noqa: BLE001
            if local.exists():
                raise DecodeLabError(f"could not load the tokenizer in '{src}': {_first_line(e)}") from None
    return HFCausalLM(model, tokenizer)


def _load_llamacpp(src: str, device: str, dtype) -> CausalLM:
    from .models.llamacpp import LlamaCppLM

    if device != "cpu":
        raise DecodeLabError(f"the llama.cpp backend runs on the CPU here; got device '{device}'")
    if _dtype(dtype) != torch.float32:
        raise DecodeLabError("the llama.cpp backend runs a GGUF file in its own dtype: load a model directory in "
                             "float32 (converted to an f32 GGUF), or convert it yourself with `decodelab convert "
                             "--to gguf --dtype f16` and load the .gguf")
    if src.endswith(".gguf"):
        return LlamaCppLM(src)
    from .convert import cached_gguf, need_gguf

    need_gguf()
    return LlamaCppLM(cached_gguf(src))


def stream(model, prompt=None, method: str = "greedy", *, messages=None, draft=None, max_new_tokens: int = 64,
           ignore_eos: bool = False, stop: str | list[str] | None = None, state: State | None = None,
           stats: DecodeStats | None = None, logprobs: list | None = None, trace: list | None = None,
           sequences: list | None = None, tokenizer=None, **kwargs) -> Iterator[list[int]]:
    """Yield the token ids each decoding step commits. Same arguments as generate(), one prompt;
    pass a DecodeStats as `stats` (and lists as `logprobs` / `trace` / `sequences`) to read the
    counts (each token's log-probability / each step's StepTrace / every output of a method that
    returns several, best first) as the iterator runs."""
    if _is_batch(prompt, messages):
        raise DecodeLabError("stream() decodes one prompt; call it once per prompt, or use generate()")
    spec = get(method)  # an unknown method fails before anything else
    req, config = _request(spec, model, prompt, messages, draft, max_new_tokens, ignore_eos, state, stats,
                           logprobs, trace, tokenizer, kwargs, sequences)
    chunks = spec.run(req, config)
    if stop:
        chunks = _cut_at_stop_strings(chunks, req, _stop_list(stop, req.target))
    return _counted(chunks, req)


def generate(model, prompt=None, method: str = "greedy", *, messages=None, draft=None, max_new_tokens: int = 64,
             ignore_eos: bool = False, stop: str | list[str] | None = None, state: State | None = None,
             logprobs: bool = False, trace: bool = False, tokenizer=None,
             **kwargs) -> DecodeOutput | list[DecodeOutput]:
    """Decode `prompt` (a string, or a list of token ids) with `method`.

    A list of prompts (strings or id lists; or `messages` as a list of conversations) returns one
    output per prompt, decoded in turn. `messages=[{"role": ..., "content": ...}, ...]` formats a
    conversation with the tokenizer's chat template instead of a prompt. kwargs are
    transformers-style sampling arguments (do_sample, temperature, top_k, top_p, min_p, seed; and
    the llama.cpp sampler chain's typical_p, top_n_sigma, xtc_*, penalties, dry_*, samplers:
    docs/sampling.md) and the method's own options (see `decodelab.methods()`). `stop`: strings that
    end the generation (the token completing one is the last emitted). `logprobs=True` also returns
    each generated token's log-probability under the target; `trace=True` how each step produced its
    tokens (StepTrace: drafted and accepted, bonus, rejected drafts). `state`: a decodelab.State
    carried across calls by methods that learn (Token Recycling, ADED). `model` and `draft` may be
    decodelab adapters (from load()) or transformers models. Returns the generated ids only, the
    decoded text (when there is a tokenizer) and the counts. Methods that produce several outputs
    (beam's and diverse_beam's beams, superposed's drafts) return the best as `tokens` and all of
    them, best first, as `sequences` (None for the others); stop strings cut `tokens` only.
    """
    target = _adapt(model, tokenizer)
    common = dict(draft=draft, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, stop=stop, state=state, **kwargs)
    if _is_batch(prompt, messages):
        items = [(p, None) for p in prompt] if messages is None else [(None, m) for m in messages]
        return [generate(target, p, method, messages=m, logprobs=logprobs, trace=trace, **common) for p, m in items]
    stats, lps, steps, seqs = DecodeStats(), ([] if logprobs else None), ([] if trace else None), []
    tokens = [t for chunk in stream(target, prompt, method, messages=messages, stats=stats, logprobs=lps,
                                    trace=steps, sequences=seqs, **common) for t in chunk]
    text = target.tokenizer.decode(tokens) if target.tokenizer is not None else None
    return DecodeOutput(tokens=tokens, text=text, stats=stats, method=method, logprobs=lps, trace=steps,
                        sequences=seqs or None)


def _request(spec: Method, model, prompt, messages, draft, max_new_tokens, ignore_eos, state, stats, logprobs,
             trace, tokenizer, kwargs, sequences=None) -> tuple[Request, object]:
    """Check everything and build the Request on fresh adapters (own caches and counters)."""
    target = _adapt(model, tokenizer).fresh(needs=spec.needs)
    draft_lm = _adapt(draft, None).fresh(needs=spec.needs) if draft is not None else None
    sampling, config = _split_kwargs(spec, kwargs)
    ids = _prompt_ids(target, prompt, messages)
    max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
    _check(spec, target, draft_lm, ids, max_new_tokens, sampling)
    if state is not None and not isinstance(state, State):
        raise DecodeLabError(f"state must be a decodelab.State, got {type(state).__name__}")
    stats = stats if stats is not None else DecodeStats()
    stats.prompt_tokens = len(ids)
    return Request(target=target, prompt=ids, max_new_tokens=max_new_tokens, sampling=sampling, stats=stats,
                   rng=sampling.generator() if sampling.do_sample else None,
                   stops=frozenset() if ignore_eos else frozenset(target.eos_token_ids), draft=draft_lm,
                   state=state if state is not None else State(), logprobs=logprobs, trace=trace,
                   sequences=sequences), config


def _counted(chunks, req: Request):
    """Count the tokens the caller receives and, at the end, the forwards each model made."""
    stats, target, draft = req.stats, req.target, req.draft
    try:
        for chunk in chunks:
            stats.new_tokens += len(chunk)
            yield chunk
    finally:
        _close(chunks)
        stats.target_forwards = target.counter.forwards
        stats.target_tokens_scored = target.counter.tokens
        stats.prefill_forwards = target.counter.prefill_forwards
        stats.forwarded_tokens = target.counter.tokens + target.counter.prefill_tokens
        if draft is not None:
            stats.draft_forwards = draft.counter.forwards + draft.counter.prefill_forwards
            stats.draft_tokens_scored = draft.counter.tokens + draft.counter.prefill_tokens


def _cut_at_stop_strings(chunks, req: Request, stops: list[str]):
    """End the generation at the token that completes a stop string (transformers' `stop_strings`
    rule: that token is emitted, nothing after it). Only the tail of the text is decoded per step:
    the last chunk plus enough tokens before it to hold the longest stop string."""
    tok, done = req.target.tokenizer, []
    tail = max(len(s) for s in stops) + 8  # tokens before the chunk a stop string may start in

    def hit(tokens: list[int], prev: int) -> bool:
        return any(s in tok.decode(tokens[max(0, prev - tail):]) for s in stops)

    try:
        for chunk in chunks:
            tokens = done + chunk
            if not hit(tokens, len(done)):
                done = tokens
                yield chunk
                continue
            n = next(k for k in range(len(done) + 1, len(tokens) + 1) if hit(tokens[:k], len(done)))
            dropped = len(tokens) - n
            req.stats.committed[-1] -= dropped
            if req.logprobs is not None and dropped:
                del req.logprobs[-dropped:]
            if req.trace is not None and dropped:
                last = req.trace[-1]
                last.tokens = last.tokens[:len(last.tokens) - dropped]
                last.accepted = min(last.accepted, len(last.tokens))
            yield tokens[len(done):n]
            return
    finally:
        _close(chunks)


def _close(chunks) -> None:
    """Stop a method's generator now (not at garbage collection), so its loop ends its work."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _stop_list(stop, target) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise DecodeLabError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    if target.tokenizer is None:
        raise DecodeLabError("stop strings need a model with a tokenizer")
    return list(stops)


def _is_batch(prompt, messages) -> bool:
    if messages is not None:
        return isinstance(messages, (list, tuple)) and bool(messages) and isinstance(messages[0], (list, tuple))
    return isinstance(prompt, (list, tuple)) and bool(prompt) and isinstance(prompt[0], (str, list, tuple, torch.Tensor))


def _adapt(model, tokenizer) -> CausalLM:
    """Pass adapters through; wrap a transformers model in HFCausalLM (cheap: no weights copied)."""
    if isinstance(model, (CausalLM, MaskedDiffusionLM)):
        if tokenizer is not None and getattr(model, "tokenizer", None) is None:
            model.tokenizer = tokenizer
        return model
    from transformers import PreTrainedModel

    from .models.hf_diffusion import HFDiffusionLM, is_masked_diffusion

    if isinstance(model, PreTrainedModel):
        return HFDiffusionLM(model, tokenizer) if is_masked_diffusion(model) else HFCausalLM(model, tokenizer)
    raise DecodeLabError(f"expected a decodelab model (decodelab.load) or a transformers model, got "
                         f"{type(model).__name__}")


def _split_kwargs(spec, kwargs) -> tuple[SamplingConfig, object]:
    sampling_kw = {k: v for k, v in kwargs.items() if k in _SAMPLING_FIELDS}
    if spec.modes == ("sample",):
        sampling_kw.setdefault("do_sample", True)
    sampling = SamplingConfig(**sampling_kw)
    ignored = sampling.ignored()
    if ignored:  # as transformers: a sampling flag without do_sample is a likely mistake, not an error
        warnings.warn(f"do_sample is False, so {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored "
                      "(greedy decoding); pass do_sample=True to sample", UserWarning, stacklevel=4)
    config = spec.make_config(**{k: v for k, v in kwargs.items() if k not in _SAMPLING_FIELDS})
    return sampling, config


def _prompt_ids(target: CausalLM, prompt, messages) -> torch.Tensor:
    if (prompt is None) == (messages is None):
        raise DecodeLabError("give a prompt or messages (a chat), not both" if prompt is not None
                             else "no prompt: give a prompt (text or token ids) or messages")
    if messages is not None:
        ids = _chat_ids(target.tokenizer, messages)
    elif isinstance(prompt, str):
        if target.tokenizer is None:
            raise DecodeLabError("this model has no tokenizer: give the prompt as token ids")
        ids = encode(target.tokenizer, prompt)
    else:
        try:
            ids = [operator.index(t) for t in prompt]
        except TypeError:
            raise DecodeLabError("prompt must be a string or a list of token ids") from None
    if not ids:
        raise DecodeLabError("the prompt is empty")
    bad = [t for t in ids if not 0 <= t < target.vocab_size]
    if bad:
        raise DecodeLabError(f"prompt token id(s) {bad[:5]} outside the vocabulary [0, {target.vocab_size})")
    return torch.tensor(ids, dtype=torch.long)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of text, with the BOS token first when the tokenizer adds one (as transformers'
    tokenizer(text) does), and never an appended EOS."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and _adds_bos(tokenizer) and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids


@functools.lru_cache(maxsize=16)
def _adds_bos(tokenizer) -> bool:
    return tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]


def _chat_ids(tokenizer, messages) -> list[int]:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise DecodeLabError("this model's tokenizer has no chat template; give a prompt instead of messages")
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise DecodeLabError("messages must be a list of {'role': ..., 'content': ...} dicts")
    try:
        out = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    except Exception as e:  # noqa: BLE001  (a template's own errors: roles it refuses, missing fields)
        raise DecodeLabError(f"the chat template refused these messages: {_first_line(e)}") from None
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _positive_int(name: str, value) -> int:
    try:
        n = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        n = None
    if n is None or n <= 0:
        raise DecodeLabError(f"{name} must be a positive integer, got {value!r}")
    return n


def _check(spec, target, draft, ids, max_new_tokens, sampling) -> None:
    if (spec.family == "diffusion") != isinstance(target, MaskedDiffusionLM):
        if spec.family == "diffusion":
            raise DecodeLabError(f"method '{spec.name}' decodes masked diffusion LMs; this model is a causal LM "
                                 "(use a causal method such as greedy, or load a masked diffusion LM)")
        raise DecodeLabError(f"this is a masked diffusion LM; method '{spec.name}' ({spec.family}) needs a causal LM; "
                             "use a diffusion method: " + ", ".join(n for n, m in all_methods().items()
                                                                     if m.family == "diffusion"))
    if target.max_length is not None and len(ids) + max_new_tokens > target.max_length:
        raise DecodeLabError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                             f"model's context of {target.max_length} tokens")
    missing = sorted(spec.needs - target.capabilities)
    if missing:
        raise DecodeLabError(f"method '{spec.name}' needs model capability {', '.join(missing)}, which "
                             f"{type(target).__name__} does not provide")
    mode = "sample" if sampling.do_sample else "greedy"
    if mode not in spec.modes:
        raise DecodeLabError(f"method '{spec.name}' does not support {'sampling (do_sample=True)' if mode == 'sample' else 'greedy decoding (do_sample=False)'}")
    if sampling.history and not spec.history:  # penalties and DRY need every token's own context
        able = ", ".join(n for n, m in all_methods().items() if m.history)
        raise DecodeLabError(f"method '{spec.name}' does not apply the context-reading sampling processors "
                             f"(repetition/presence/frequency penalties, DRY) with each token's own context; "
                             f"methods that do: {able}")
    if spec.draft and draft is None:
        raise DecodeLabError(f"method '{spec.name}' needs a draft model (draft=..., or --draft PATH)")
    if not spec.draft and draft is not None:
        raise DecodeLabError(f"method '{spec.name}' takes no draft model")
    if draft is not None:
        check_same_tokenizer(target, draft)


def check_same_tokenizer(target: CausalLM, draft: CausalLM) -> None:
    """Draft and target must share a tokenizer (the same token -> id map). Their embedding
    matrices may be padded to different sizes, as in real model families: drafting then runs over
    the shared ids (loops.drafting). Without tokenizers to compare, the matrix sizes must agree."""
    tt, dt = target.tokenizer, draft.tokenizer
    if tt is not None and dt is not None:
        if not _same_vocab(tt, dt):
            raise DecodeLabError("draft and target tokenizers differ; speculative decoding needs one tokenizer")
    elif target.vocab_size != draft.vocab_size:
        raise DecodeLabError(f"draft and target have different vocabularies ({draft.vocab_size} vs "
                             f"{target.vocab_size} tokens) and no tokenizers to compare; speculative decoding "
                             "needs one tokenizer")


@functools.lru_cache(maxsize=16)
def _same_vocab(a, b) -> bool:
    """get_vocab() builds a dict of the whole vocabulary (milliseconds), so compare each pair once."""
    return a is b or a.get_vocab() == b.get_vocab()


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise DecodeLabError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def _check_source(src: str, local: Path) -> None:
    """Refuse what cannot be a model before transformers tries: a missing path, a directory without
    config.json, or a hub name when the hub cannot be reached (instead of a long network wait)."""
    if local.exists():
        if not (local / "config.json").is_file():
            raise DecodeLabError(f"'{src}' is not a model directory (no config.json)")
        return
    if src.startswith(("/", ".", "~")) or src.count("/") > 1 or "\\" in src:
        raise DecodeLabError(f"'{src}' does not exist (no such model directory)")
    if not _in_hub_cache(src) and not _hub_reachable():
        raise DecodeLabError(f"'{src}' is not a local model directory, not in the Hugging Face cache, and the "
                             "hub cannot be reached (offline); give a model directory or zoo:NAME")


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001  (a malformed name is simply not cached)
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connection within `timeout` seconds (the name lookup
    included: it runs in a thread so that a hanging resolver cannot block us)."""
    import socket
    import threading
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    ok = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
