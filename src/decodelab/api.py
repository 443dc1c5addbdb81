"""load(), generate(), stream(), methods(): the public API, and every input check it owes users."""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Iterator

import torch

from .core.sampling import SamplingConfig
from .errors import DecodeLabError
from .models.base import CausalLM
from .models.hf import HFCausalLM
from .registry import all_methods, get
from .types import DecodeOutput, DecodeStats

_SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingConfig)}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def methods() -> dict[str, dict]:
    """name -> {family, lossless, needs, modes, summary} for every registered method."""
    return {name: m.describe() for name, m in all_methods().items()}


def load(path_or_name: str | os.PathLike, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
         trust_remote_code: bool = False) -> CausalLM:
    """Load a model as an adapter exposing `.model` and `.tokenizer`: HFCausalLM for causal LMs,
    HFDiffusionLM for masked (diffusion) LMs (architectures ending in ...ForMaskedLM).

    Accepts a local model directory (a directory without tokenizer files loads too; prompts are
    then token ids), `zoo:NAME` for a bundled zoo model, or a hub name where a hub is reachable.
    Weights load from safetensors only; remote code runs only with trust_remote_code=True.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = str(path_or_name)
    if src.startswith("zoo:"):
        from . import zoo

        src = str(zoo.resolve(src[4:]))
    local = Path(src).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise DecodeLabError(f"'{src}' is not a model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001  (hub, parse and remote-code errors all mean "not a model")
        raise DecodeLabError(f"'{src}' is not a loadable model: {_first_line(e)}") from None
    arch = " ".join(getattr(config, "architectures", None) or [])
    if "MaskedLM" in arch:  # a masked diffusion LM: its own adapter, for the diffusion loop
        from .models.hf_diffusion import HFDiffusionLM

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


def stream(model, prompt, method: str = "greedy", *, draft=None, max_new_tokens: int = 64,
           ignore_eos: bool = False, stats: DecodeStats | None = None, tokenizer=None,
           **kwargs) -> Iterator[list[int]]:
    """Yield the token ids each decoding step commits. Same arguments as generate(); pass a
    DecodeStats as `stats` to read the counts once the iterator is exhausted."""
    target, draft_lm = _adapt(model, tokenizer), (_adapt(draft, None) if draft is not None else None)
    if draft_lm is target:  # a model drafting for itself needs a cache of its own
        draft_lm = target.fresh()
    spec = get(method)
    sampling, config = _split_kwargs(spec, kwargs)
    ids = _prompt_ids(target, prompt)
    _check(spec, target, draft_lm, ids, max_new_tokens, sampling)
    stats = stats if stats is not None else DecodeStats()
    stats.prompt_tokens = len(ids)
    stops = set() if ignore_eos else set(target.eos_token_ids)
    rng = sampling.generator() if sampling.do_sample else None
    return _counted(spec.run(target, ids, max_new_tokens, config=config, sampling=sampling, draft=draft_lm,
                             rng=rng, stops=stops, stats=stats), stats, target, draft_lm)


def generate(model, prompt, method: str = "greedy", *, draft=None, max_new_tokens: int = 64,
             ignore_eos: bool = False, tokenizer=None, **kwargs) -> DecodeOutput:
    """Decode `prompt` (a string, or a list of token ids) with `method`.

    kwargs are transformers-style sampling arguments (do_sample, temperature, top_k, top_p, min_p,
    seed) and the method's own options (see `decodelab.methods()`). `model` and `draft` may be
    decodelab adapters (from load()) or transformers models. Returns the generated ids only, the
    decoded text (when there is a tokenizer) and the counts.
    """
    stats = DecodeStats()
    target = _adapt(model, tokenizer)
    tokens = [t for chunk in stream(target, prompt, method, draft=draft, max_new_tokens=max_new_tokens,
                                    ignore_eos=ignore_eos, stats=stats, **kwargs)
              for t in chunk]
    text = target.tokenizer.decode(tokens) if target.tokenizer is not None else None
    return DecodeOutput(tokens=tokens, text=text, stats=stats, method=method)


def _counted(chunks, stats: DecodeStats, target: CausalLM, draft: CausalLM | None):
    t0, d0 = dataclasses.replace(target.counter), draft and dataclasses.replace(draft.counter)
    try:
        for chunk in chunks:
            stats.new_tokens += len(chunk)
            yield chunk
    finally:
        stats.target_forwards = target.counter.forwards - t0.forwards
        stats.target_tokens_scored = target.counter.tokens - t0.tokens
        stats.prefill_forwards = target.counter.prefill_forwards - t0.prefill_forwards
        if draft is not None:
            stats.draft_forwards = (draft.counter.forwards + draft.counter.prefill_forwards
                                    - d0.forwards - d0.prefill_forwards)
            stats.draft_tokens_scored = (draft.counter.tokens + draft.counter.prefill_tokens
                                         - d0.tokens - d0.prefill_tokens)


def _adapt(model, tokenizer) -> CausalLM:
    """Pass adapters through; wrap a transformers model in HFCausalLM (cheap: no weights copied)."""
    if isinstance(model, CausalLM):
        if tokenizer is not None and getattr(model, "tokenizer", None) is None:
            model.tokenizer = tokenizer
        return model
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return HFCausalLM(model, tokenizer)
    if hasattr(model, "mask_id"):
        raise DecodeLabError("this is a masked diffusion LM; the causal decoding methods need a causal LM "
                             "(AutoModelForCausalLM)")
    raise DecodeLabError(f"expected a decodelab model (decodelab.load) or a transformers model, got "
                         f"{type(model).__name__}")


def _split_kwargs(spec, kwargs) -> tuple[SamplingConfig, object]:
    sampling_kw = {k: v for k, v in kwargs.items() if k in _SAMPLING_FIELDS}
    if spec.modes == ("sample",):
        sampling_kw.setdefault("do_sample", True)
    sampling = SamplingConfig(**sampling_kw)
    config = spec.make_config(**{k: v for k, v in kwargs.items() if k not in _SAMPLING_FIELDS})
    return sampling, config


def _prompt_ids(target: CausalLM, prompt) -> torch.Tensor:
    if isinstance(prompt, str):
        if target.tokenizer is None:
            raise DecodeLabError("this model has no tokenizer: give the prompt as token ids")
        ids = target.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    else:
        try:
            ids = [int(t) for t in prompt]
        except (TypeError, ValueError):
            raise DecodeLabError("prompt must be a string or a list of token ids") from None
    if not ids:
        raise DecodeLabError("the prompt is empty")
    bad = [t for t in ids if not 0 <= t < target.vocab_size]
    if bad:
        raise DecodeLabError(f"prompt token id(s) {bad[:5]} outside the vocabulary [0, {target.vocab_size})")
    return torch.tensor(ids, dtype=torch.long)


def _check(spec, target, draft, ids, max_new_tokens, sampling) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise DecodeLabError(f"max_new_tokens must be a positive integer, got {max_new_tokens}")
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
    if spec.draft and draft is None:
        raise DecodeLabError(f"method '{spec.name}' needs a draft model (draft=..., or --draft PATH)")
    if not spec.draft and draft is not None:
        raise DecodeLabError(f"method '{spec.name}' takes no draft model")
    if draft is not None:
        check_same_tokenizer(target, draft)


def check_same_tokenizer(target: CausalLM, draft: CausalLM) -> None:
    """Draft and target must share a vocabulary: same size, and same token->id map when both
    have tokenizers."""
    if target.vocab_size != draft.vocab_size:
        raise DecodeLabError(f"draft and target have different vocabularies ({draft.vocab_size} vs "
                             f"{target.vocab_size} tokens); speculative decoding needs one tokenizer")
    tt, dt = target.tokenizer, draft.tokenizer
    if tt is not None and dt is not None and not _same_vocab(tt, dt):
        raise DecodeLabError("draft and target tokenizers differ; speculative decoding needs one tokenizer")


@functools.lru_cache(maxsize=16)
def _same_vocab(a, b) -> bool:
    """get_vocab() builds a dict of the whole vocabulary (milliseconds), so compare each pair once."""
    return a is b or a.get_vocab() == b.get_vocab()


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
