"""Adapter for any transformers AutoModelForCausalLM, batch 1 with an explicit-position KV cache.

Tree forwards pass a 4D additive mask of shape [1, 1, N, cache + N]: cached tokens are visible to
every new token, new tokens see each other through `tree_mask`. transformers uses a 4D mask as
given, for eager and sdpa attention alike. `commit` keeps the cache entries of the accepted path
and drops the rest, so the cache then equals the one a sequential decode would have built.

Sliding-window models (Mistral and Phi-3 with `sliding_window`, Qwen2 with `use_sliding_window`,
Gemma2, Gemma3): transformers' own cache drops keys that leave the window and keeps a running
length of its own, which neither `truncate` nor `commit` could rewind. Here every layer keeps a
full cache instead (plain `DynamicLayer`s), so rewinding stays an index operation, and the window
is applied by masks: a query at position q sees a key at position k iff q - k < window
(transformers' `sliding_window_overlay`: kv_idx > q_idx - sliding_window). Cached keys sit at their
cache index, which is their position, so chain forwards use transformers' own masks (built from
the cache length, exactly as in its sequential decode) and tree forwards pass one 4D mask per
layer type: a dict {"full_attention": ..., "sliding_attention": ...} for models that mix both
(Qwen2, Gemma2, Gemma3), one tensor for models whose layers all slide (Mistral, Phi-3).
The trade-off: the cache of a sliding layer grows with the sequence instead of stopping at the
window, and its attention reads (masked) keys beyond the window, so memory and attention time of
those layers grow with the context like a full-attention layer's. Outputs are exact.

Models with other layer kinds (chunked or linear attention, recurrent states) decode forward only:
they lack the "rewind" and "tree_mask" capabilities, so the registry refuses speculative methods
on them up front (and rolling their cache back raises a DecodeLabError).

Layer skipping ("layer_skip", FiRST): `forward(..., skip=S)` runs a view of the model whose decoder
layer list holds only the layers not in S (a shallow copy of the model and of its decoder sharing
every module and weight; the user's model is not changed; for models that index masks by
`config.layer_types`, the view's config lists the kept layers' types). A skipped layer passes the
residual stream through unchanged and its cache gains nothing; each kept attention layer still
writes its own cache entry by its own `layer_idx`. transformers sizes its masks by the cache length
of the first full-attention layer, which may be a skipped one, so a skipping forward passes its own
causal mask (the tree path's, with a lower-triangular tree). A layer whose cache missed some tokens
can never run again on later ones (it would attend to an incomplete past): forward refuses that
until `truncate` cuts the cache back to what the layer holds.
"""
from __future__ import annotations

import copy
import functools
import inspect
import os

import torch
from transformers import DynamicCache, PreTrainedModel

from ..errors import DecodeLabError
from .base import CachedIds, Counter, Step

_FULL, _SLIDING = "full_attention", "sliding_attention"


class HFCausalLM(CachedIds):
    capabilities = frozenset({"tree_mask", "hidden_states", "batch", "rewind", "embeds"})

    def __init__(self, model: PreTrainedModel, tokenizer=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.max_length = _context_length(model.config)
        self.counter = Counter()
        self.costs: dict = {}  # forward cost curves (models/costs.py), shared with every fresh() copy
        # transformers renamed `past_key_values` to `cache` within v5; use whichever this one takes
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._window, self._per_type, self._fixed = _attention_layout(self.config)
        if self._fixed is not None:  # no rewinding, so no speculative method and no tree forwards
            self.capabilities = frozenset({"hidden_states", "embeds"})
        elif _decoder_layers(model) is not None:
            self.capabilities = self.capabilities | {"layer_skip"}
        self._views: dict = {}  # skip set -> the model without those layers (shared by fresh() copies)
        self.reset()

    def fresh(self, needs: frozenset[str] | None = None) -> "HFCausalLM":
        """Another adapter over the same weights with its own cache and counter (a model may
        draft for itself). Called once per generation: copies what __init__ worked out."""
        other = copy.copy(self)
        other.counter = Counter()
        other.reset()
        return other

    @functools.cached_property
    def cache_key(self) -> str | None:
        """What identifies these weights, dtype and device in on-disk caches (models/costs.py):
        the checkpoint's path and weight files' sizes and times when they were loaded (worked out
        once: fresh() copies share it); None for a model not loaded from a directory."""
        src = getattr(self.model, "name_or_path", "") or ""
        if not src or not os.path.isdir(src):
            return None
        files = sorted(f for f in os.listdir(src) if f.endswith((".safetensors", ".bin", "config.json")))
        stamp = ",".join(f"{f}:{os.path.getsize(os.path.join(src, f))}:{os.path.getmtime(os.path.join(src, f))}"
                         for f in files)
        return f"{os.path.abspath(src)}|{stamp}|{self.dtype}|{self.device}"

    # -- cache ---------------------------------------------------------------------------------
    def reset(self) -> None:
        # full layers everywhere for sliding models: rewinding must not meet dropped keys
        self._cache = DynamicCache() if self._window is not None else DynamicCache(config=self.config)
        self._ids = torch.empty(1, 0, dtype=torch.long, device=self.device)  # [B, L]
        self._base = 0  # cache length before the last forward
        self._skipped = False  # some forward skipped layers: check every layer's cache before running it

    def _index_cache(self, idx: torch.Tensor, dim: int) -> None:
        for layer in self._cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys.index_select(dim, idx)
                layer.values = layer.values.index_select(dim, idx)

    def _check_rewind(self, n: int) -> None:
        if self._fixed is not None and n < self.cache_len:
            raise DecodeLabError(f"{type(self.model).__name__} has {self._fixed} layers, whose cache cannot be "
                                 f"rolled back; only methods that never reject a token can run on it")

    def truncate(self, n: int) -> None:
        if n < self.cache_len:
            self._check_rewind(n)
            keep = torch.arange(n, device=self.device)
            for layer in self._cache.layers:  # a layer skipped for later tokens may already be shorter
                if getattr(layer, "keys", None) is not None and layer.keys.shape[-2] > n:
                    layer.keys, layer.values = layer.keys.index_select(-2, keep), layer.values.index_select(-2, keep)
            self._ids = self._ids[:, :n]
        self._base = min(self._base, n)

    @torch.inference_mode()  # the cache holds inference tensors, updated in place below
    def commit(self, keep) -> None:
        keep_list = keep.tolist() if torch.is_tensor(keep) else list(keep)
        end = self._base + len(keep_list)
        self._check_rewind(end)
        if keep_list == list(range(len(keep_list))):  # a prefix of the last forward (chains): cut
            for layer in self._cache.layers:
                if getattr(layer, "keys", None) is not None and layer.keys.numel():
                    layer.keys, layer.values = layer.keys[..., :end, :], layer.values[..., :end, :]
            self._ids = self._ids[:, :end]
            self._base = end
            return
        src = self._base + torch.tensor(keep_list, dtype=torch.long, device=self.device)
        # move only the kept rows of the last forward into place and drop the rest: O(kept), not
        # O(cache) (the gather on the right copies first, so overlapping rows are safe)
        for layer in self._cache.layers:  # a layer the last forward skipped holds none of its rows
            if getattr(layer, "keys", None) is not None and layer.keys.shape[-2] > self._base:
                layer.keys[..., self._base:end, :] = layer.keys[..., src, :]
                layer.values[..., self._base:end, :] = layer.values[..., src, :]
                layer.keys, layer.values = layer.keys[..., :end, :], layer.values[..., :end, :]
        self._ids = torch.cat([self._ids[:, : self._base], self._ids[:, src]], dim=1)
        self._base = self.cache_len

    def select(self, rows: torch.Tensor) -> None:
        """Keep, reorder or repeat batch rows of the cache (rows [0, 0, 0] turns batch 1 into 3)."""
        rows = rows.to(self.device)
        self._index_cache(rows, dim=0)
        self._ids = self._ids[rows]

    # -- forward -------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The model's input embeddings of ids [...] -> [..., H] (its own embedding module, so any
        scaling it applies, as Gemma's, is included)."""
        return self.model.get_input_embeddings()(ids.to(self.device))

    @torch.inference_mode()
    def forward(self, ids, positions, tree_mask=None, hidden=False, embeds=None, skip=None, layers=False) -> Step:
        """embeds: [N, H] (or [B, N, H]) input embeddings to run instead of the ids' own ("embeds"
        capability: Superposed Decoding's mixtures); the ids then only name the cached positions.
        skip: decoder layer indices to bypass ("layer_skip"; see the module docstring). layers: also
        return Step.layers, every decoder layer's input (not with skip)."""
        batched = ids.ndim == 2
        ids2 = (ids if batched else ids[None]).to(self.device)  # [B, N]
        pos2 = (positions if batched else positions[None]).to(self.device)  # [B, N]
        n = ids2.shape[1]
        skip = skip if isinstance(skip, frozenset) else frozenset(int(i) for i in skip or ())
        model = self._skip_view(skip, layers) if skip else self.model
        if skip and tree_mask is None:  # transformers would size the mask by a cache layer that may be skipped
            tree_mask = torch.ones(n, n, dtype=torch.bool).tril_()
        if self._skipped:
            self._check_layers(skip)
        mask = None if tree_mask is None else self._tree_masks(tree_mask.to(self.device), pos2)
        self._base = self.cache_len
        self._skipped = self._skipped or bool(skip)
        inputs = {"input_ids": ids2} if embeds is None else \
            {"inputs_embeds": (embeds if batched else embeds[None]).to(self.device, self.dtype)}
        out = model(**inputs, position_ids=pos2, attention_mask=mask, use_cache=True,
                    output_hidden_states=hidden or layers, **{self._cache_kw: self._cache})
        self._ids = torch.cat([self._ids, ids2], dim=1)
        self.counter.count(ids2.numel())
        logits = out.logits.float()  # [B, N, V]
        h = out.hidden_states[-1] if hidden else None
        lay = torch.stack(out.hidden_states[:-1], dim=1) if layers else None  # [B, L, N, H] layer inputs
        if not batched:
            logits, h, lay = logits[0], (h[0] if h is not None else None), (lay[0] if lay is not None else None)
        assert logits.shape[-2] == n
        return Step(logits=logits, hidden=h, layers=lay)

    def _skip_view(self, skip: frozenset[int], layers: bool):
        """The model without the decoder layers in `skip` (built once per skip set)."""
        if "layer_skip" not in self.capabilities:
            raise DecodeLabError(f"{type(self.model).__name__}: this adapter cannot skip its decoder layers "
                                 "(capability layer_skip)")
        total = len(_decoder_layers(self.model))
        bad = sorted(i for i in skip if not 0 <= i < total)
        if bad:
            raise DecodeLabError(f"cannot skip layer(s) {bad}: {type(self.model).__name__} has {total} decoder layers")
        if layers:
            raise DecodeLabError("layers=True reads every decoder layer's input; a forward that skips layers has none")
        if skip not in self._views:
            self._views[skip] = _without_layers(self.model, skip)
        return self._views[skip]

    def _check_layers(self, skip: frozenset[int]) -> None:
        """Refuse to run a layer whose cache missed some of the cached tokens (skipped for them)."""
        held = [getattr(layer, "keys", None) for layer in self._cache.layers]
        for i in range(len(_decoder_layers(self.model))):
            n = held[i].shape[-2] if i < len(held) and held[i] is not None and held[i].numel() else 0
            if i not in skip and n < self.cache_len:
                raise DecodeLabError(f"decoder layer {i} was skipped for cached tokens {n}..{self.cache_len - 1}, so it "
                                     f"cannot run on later ones; skip it again, or truncate the cache to {n} tokens")

    def _tree_masks(self, tree_mask: torch.Tensor, pos: torch.Tensor):
        """The attention_mask argument of a tree forward: one 4D mask, or one per layer type.
        tree_mask [N, N] bool, pos [B, N]."""
        if self._fixed is not None:
            raise DecodeLabError(f"{type(self.model).__name__} has {self._fixed} layers: no tree forwards")
        n, cached = tree_mask.shape[0], self.cache_len
        visible = torch.ones(n, cached + n, dtype=torch.bool, device=self.device)  # [N, C + N]
        visible[:, cached:] = tree_mask
        if self._window is None:
            return self._additive(visible[None, None])
        # keys' positions: cached keys at their index, new ones where the caller put them
        keys = torch.cat([torch.arange(cached, device=self.device).expand(pos.shape[0], -1), pos], dim=1)  # [B, C+N]
        in_window = pos[:, :, None] - keys[:, None, :] < self._window  # [B, N, C + N]
        sliding = self._additive((visible & in_window)[:, None])  # [B, 1, N, C + N]
        if not self._per_type:  # every layer slides: the model takes one mask
            return sliding
        return {_FULL: self._additive(visible[None, None]), _SLIDING: sliding}

    def _additive(self, visible: torch.Tensor) -> torch.Tensor:
        """Bool [.., Q, K] -> 0 where visible, the dtype's minimum elsewhere."""
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device)
        return mask.masked_fill_(~visible, torch.finfo(self.dtype).min)

    # -- metadata ------------------------------------------------------------------------------
    @property
    def eos_token_ids(self) -> list[int]:
        ids = getattr(self.model.generation_config, "eos_token_id", None)
        if ids is None:
            ids = self.config.eos_token_id
        if ids is None and self.tokenizer is not None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return []
        return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def _attention_layout(config) -> tuple[int | None, bool, str | None]:
    """(sliding window or None, whether tree forwards pass a dict of masks by layer type, the
    layer kinds this adapter cannot rewind or None), read from the decoder's config the way
    transformers' DynamicCache reads it."""
    decoder = config.get_text_config(decoder=True)
    window = getattr(decoder, "sliding_window", None)
    types = tuple(getattr(decoder, "layer_types", None) or ())
    if not types and getattr(decoder, "attention_chunk_size", None) is not None:
        types = ("chunked_attention",)  # what DynamicCache infers from it
    if not types:  # Mistral and Phi-3: `sliding_window` alone makes every layer slide
        return window, False, None
    other = sorted(set(types) - {_FULL, _SLIDING})
    if other:
        return None, False, ", ".join(other)
    if _SLIDING not in types or window is None:
        return None, False, None
    # mixed models index a dict of masks by layer type; a single 4D tensor serves all layers alike
    return window, _FULL in types, None


def _decoder_layers(model) -> torch.nn.ModuleList | None:
    """The decoder's list of layers (`base_model.layers`), or None for a model laid out otherwise."""
    layers = getattr(getattr(model, "base_model", None), "layers", None)
    return layers if isinstance(layers, torch.nn.ModuleList) else None


def _shallow(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of module sharing every submodule and weight, whose submodules can be replaced alone."""
    view = copy.copy(module)
    view._modules = dict(module._modules)
    return view


def _without_layers(model, skip: frozenset[int]):
    """A view of model whose decoder runs only the layers not in skip, in order."""
    base = model.base_model
    keep = [i for i in range(len(base.layers)) if i not in skip]
    inner = _shallow(base)
    inner.layers = torch.nn.ModuleList([base.layers[i] for i in keep])
    types = getattr(base.config, "layer_types", None)
    if types:  # Qwen2 and the Gemmas pick each layer's mask by its index in the list
        inner.config = copy.copy(base.config)
        inner.config.layer_types = [types[i] for i in keep]
    outer = _shallow(model)
    setattr(outer, model.base_model_prefix, inner)
    return outer


def _context_length(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
