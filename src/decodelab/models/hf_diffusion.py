"""Adapter for masked diffusion LMs of two kinds, behind one protocol (models.base.MaskedDiffusionLM):

- encoders: any transformers `...ForMaskedLM` (ModernBERT, BERT): bidirectional by design, no
  KV cache;
- bidirectional decoders: a stock decoder LM (Llama, Qwen2, ...; its `...ForCausalLM` class)
  whose config carries the marker `masked_diffusion: true`. It is run bidirectionally by passing
  a full 4D attention mask (every query sees every key), as Dream runs Qwen2; transformers uses
  a 4D mask as given. Its attention keeps keys and values, so it declares "kv_cache": Fast-dLLM's
  prefix and dual caches. The zoo's tasks-mdlm-llama is one (position i predicts token i: no
  shift of the logits, unlike Dream, which was adapted from an autoregressive model).

`is_masked_diffusion(config)` is the one rule that says which models are diffusion LMs (api.load
and the bench use it). The mask and end-of-text ids come from the tokenizer.

Cache (decoders): `logits(canvas, keep=positions)` runs the full canvas and keeps the keys and
values of `keep` (RoPE already applied at their true positions, so their order in the cache does
not matter under full attention); `logits_cached(ids, positions)` forwards only `ids`, which
attend to the kept entries and to each other, then drops its own entries again.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path

import torch

from decodelab.errors import DecodeLabError

from .base import Counter

MARKER = "masked_diffusion"  # config.json key of a decoder LM trained as a masked diffusion LM


def is_masked_diffusion(config) -> bool:
    """Whether a model is a masked diffusion LM: a ...ForMaskedLM architecture, or any architecture
    with `masked_diffusion: true` in its config. `config`: a transformers config, the dict of a
    config.json, or a model (a model built in memory has no `architectures` yet: its class counts)."""
    if hasattr(config, "config") and not isinstance(config, dict):
        return "ForMaskedLM" in type(config).__name__ or is_masked_diffusion(config.config)
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    return any("MaskedLM" in a for a in (get("architectures") or [])) or get(MARKER, False) is True


def _is_decoder(model) -> bool:
    return getattr(model.config, MARKER, False) is True and hasattr(model, "lm_head")


class HFDiffusionLM:
    def __init__(self, model, tokenizer):
        if tokenizer is None or tokenizer.mask_token_id is None:
            raise DecodeLabError("a masked diffusion model needs a tokenizer with a mask token")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mask_id: int = tokenizer.mask_token_id
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.max_length: int | None = getattr(model.config, "max_position_embeddings", None)
        self.decoder = _is_decoder(model)
        self.capabilities = frozenset({"batch", "kv_cache"} if self.decoder else {"batch"})
        self.counter = Counter()
        self._split = split_head(model)  # None for other architectures: full logits, then rows
        self._base = getattr(model, model.base_model_prefix, None)
        # transformers renamed `past_key_values` to `cache` within v5; use whichever this one takes
        params = inspect.signature(self._base.forward).parameters if self._base is not None else {}
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._cache = None  # decoders: a DynamicCache holding the kept positions

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

        config = AutoConfig.from_pretrained(str(path))
        auto = AutoModelForMaskedLM if any("MaskedLM" in a for a in config.architectures or []) else AutoModelForCausalLM
        try:
            model = auto.from_pretrained(str(path), dtype=dtype, use_safetensors=True).to(device)
            tok = AutoTokenizer.from_pretrained(str(path))
        except Exception as e:  # noqa: BLE001
            raise DecodeLabError(f"could not load the masked diffusion model in '{path}': "
                                 f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
        return cls(model, tok)

    def fresh(self, needs: frozenset[str] | None = None) -> "HFDiffusionLM":
        """The same weights with a counter and a cache of their own (one per generation)."""
        other = copy.copy(self)
        other.counter, other._cache = Counter(), None
        return other

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return [] if eos is None else [int(eos)]

    def _check_len(self, n: int) -> None:
        if self.max_length is not None and n > self.max_length:
            raise DecodeLabError(f"canvas of {n} tokens exceeds the model's {self.max_length}-token context")

    # -- forwards --------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, canvas, rows=None, keep=None):
        single = canvas.ndim == 1
        ids = (canvas[None] if single else canvas).to(self.device)  # [B, N]
        self._check_len(ids.shape[1])
        self.counter.count(ids.numel())
        if self._split is None:  # no known head: the model's own logits, then the rows
            out = self.model(input_ids=ids).logits
            out = (out if rows is None else out[:, rows.to(self.device)]).float()
        else:
            h = self._split[0](ids, None) if keep is None else self._body_keep(ids, keep)  # [B, N, H]
            out = self._head(h, rows)
        return out[0] if single else out

    @torch.inference_mode()
    def logits_cached(self, ids, positions, rows=None):
        if self._cache is None:
            raise RuntimeError("logits_cached() before logits(keep=...) filled the cache")
        cached = self._cache.get_seq_length()
        self._check_len(cached + len(ids))
        self.counter.count(len(ids))
        ids2, pos2 = ids[None].to(self.device), positions[None].to(self.device)  # [1, M]
        mask = self._visible(1, len(ids), cached + len(ids))
        h = self._base(input_ids=ids2, position_ids=pos2, attention_mask=mask, use_cache=True,
                           **{self._cache_kw: self._cache}).last_hidden_state
        for layer in self._cache.layers:  # drop this forward's own entries: the cache stays as kept
            layer.keys, layer.values = layer.keys[..., :cached, :], layer.values[..., :cached, :]
        return self._head(h, rows)[0]

    def _body_keep(self, ids, keep):
        if not self.decoder:
            raise DecodeLabError(f"{type(self.model).__name__} keeps no keys and values (no kv_cache capability)")
        if ids.shape[0] != 1:
            raise RuntimeError("a KV cache is kept for one canvas (batch 1)")
        from transformers import DynamicCache

        cache = DynamicCache()
        n = ids.shape[1]
        h = self._base(input_ids=ids, attention_mask=self._visible(1, n, n), use_cache=True,
                           **{self._cache_kw: cache}).last_hidden_state
        keep = keep.to(self.device)
        for layer in cache.layers:  # [B, heads, N, d] -> the kept positions only
            layer.keys, layer.values = layer.keys.index_select(-2, keep), layer.values.index_select(-2, keep)
        self._cache = cache
        return h

    def _head(self, h, rows):
        if rows is not None:
            h = h[:, rows.to(self.device)]
        return self._split[1](h).float()  # [B, R, V]

    def _visible(self, b: int, q: int, k: int) -> torch.Tensor:
        """A 4D additive mask [b, 1, q, k] that hides nothing: full bidirectional attention."""
        return torch.zeros(b, 1, q, k, dtype=self.dtype, device=self.device)


def bidirectional_mask(attention_mask: torch.Tensor | None, ids: torch.Tensor, dtype) -> torch.Tensor:
    """The 4D additive mask [B, 1, T, T] that runs a decoder bidirectionally: every query sees
    every real key; padded keys (attention_mask 0) are hidden. ids: [B, T]."""
    B, T = ids.shape
    mask = torch.zeros(B, 1, T, T, dtype=dtype, device=ids.device)
    if attention_mask is not None:
        pad = (attention_mask == 0).to(ids.device)[:, None, None, :]  # [B, 1, 1, T]
        mask = mask.masked_fill(pad, torch.finfo(dtype).min)
    return mask


def split_head(model):
    """(body, head) of a stock transformers LM such that ``head(body(ids, mask))`` equals its
    logits, for the architectures the zoo uses (Llama-style ``lm_head``, BERT ``cls``, ModernBERT
    ``head`` + ``decoder``); None for others. A decoder marked ``masked_diffusion`` runs
    bidirectionally: ``body`` passes a full 4D mask (padded keys hidden)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if base is None:
        return None
    if hasattr(model, "lm_head"):
        head = model.lm_head
    elif hasattr(model, "cls"):
        head = model.cls
    elif hasattr(model, "head") and hasattr(model, "decoder"):
        def head(h):
            return model.decoder(model.head(h))
    else:
        return None

    if _is_decoder(model):
        dtype = next(model.parameters()).dtype

        def body(ids, mask):
            return base(input_ids=ids, attention_mask=bidirectional_mask(mask, ids, dtype)).last_hidden_state
    else:
        def body(ids, mask):
            return base(input_ids=ids, attention_mask=mask).last_hidden_state

    return body, head
