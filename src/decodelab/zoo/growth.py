"""Grow a trained zoo Llama into a wider and deeper one that computes the same function.

Used by recipes with ``grow_from`` (zoo:code-target-l grows from zoo:code-target): the CPU
budget here cannot train a 26M-parameter model from scratch to the small model's held-out
quality (about 700 training tokens/s on 2 cores; the corpus has 2.6M tokens, and the small
model saw 7.5M), so the big one starts from the small one and trains on from there.

Width (Net2WiderNet, Chen, Goodfellow and Shlens 2016, "Net2Net: Accelerating Learning via
Knowledge Transfer", arXiv:1511.05641): the hidden state is the source's tiled ``k`` times
(new feature j is old feature j mod h). RMSNorm's scale of a tiled vector is the
original's, so the norms' weights are tiled; every matrix reading the hidden state is tiled
and divided by ``k`` (``k`` copies sum to the original product); every matrix writing it is
tiled, so heads (contiguous blocks of head_dim) are copied whole: ``k`` times the heads, the
same head_dim, RoPE and attention scale unchanged. The MLP's inner width is tiled by its own
factor the same way. Tied embeddings: the embedding matrix is tiled, and the final norm's
weight is divided by ``k``, so the tied output layer gives the source's logits.

Depth (function-preserving block expansion, as in LLaMA Pro, Wu et al. 2024,
arXiv:2401.02415): the extra layers are fresh layers whose output projections (attention
``o_proj``, MLP ``down_proj``) are zero, so each adds nothing to the residual stream until
training moves them; they go after evenly spaced source layers.

Copies stay copies under gradient descent (equal weights get equal updates), so the tiled
weights get independent Gaussian noise of ``noise`` times each matrix's standard deviation:
the grown model computes the source's function up to that noise (``noise=0``: exactly, which
the tests check).
"""

from __future__ import annotations

import torch

from decodelab.errors import DecodeLabError


def _factor(what: str, new: int, old: int) -> int:
    if new % old:
        raise DecodeLabError(f"grow: the new {what} ({new}) must be a multiple of the source's ({old})")
    return new // old


def _check_source(cfg) -> None:
    if getattr(cfg, "model_type", None) != "llama":
        raise DecodeLabError(f"grow: the source must be a Llama model, got model_type {cfg.model_type!r}")
    if not cfg.tie_word_embeddings:
        raise DecodeLabError("grow: the source must tie its input and output embeddings (every zoo Llama does)")
    if cfg.num_key_value_heads != cfg.num_attention_heads:
        raise DecodeLabError("grow: the source must have one key/value head per attention head (no GQA)")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise DecodeLabError("grow: the source's linear layers must have no biases")


def insert_after(n_src: int, extra: int) -> list[int]:
    """The source layer after which each extra layer goes (-1: before the first), evenly spaced:
    4 source layers and 2 extra give [1, 3] (L0 L1 new L2 L3 new)."""
    return [(j + 1) * n_src // extra - 1 for j in range(extra)]


@torch.no_grad()
def grow(src, dst, noise: float = 0.01, seed: int = 0):
    """Write into ``dst`` (a fresh, wider and deeper LlamaForCausalLM) the source model ``src``
    grown as the module doc says; returns ``dst``. ``dst``'s extra layers keep their fresh
    initialisation except for their zeroed output projections."""
    s, d = src.config, dst.config
    _check_source(s)
    _check_source(d)
    if d.vocab_size != s.vocab_size:
        raise DecodeLabError(f"grow: vocabularies differ ({s.vocab_size} vs {d.vocab_size})")
    hd_s, hd_d = s.hidden_size // s.num_attention_heads, d.hidden_size // d.num_attention_heads
    if hd_s != hd_d:
        raise DecodeLabError(f"grow: head_dim must stay {hd_s} (hidden {d.hidden_size} / heads "
                             f"{d.num_attention_heads} = {hd_d}); scale heads with hidden")
    k = _factor("hidden size", d.hidden_size, s.hidden_size)
    kf = _factor("MLP width", d.intermediate_size, s.intermediate_size)
    if d.num_hidden_layers < s.num_hidden_layers:
        raise DecodeLabError(f"grow: the new model has fewer layers ({d.num_hidden_layers}) than the source "
                             f"({s.num_hidden_layers})")
    gen = torch.Generator().manual_seed(seed)

    def tiled(w: torch.Tensor, rows: int, cols: int, scale: float) -> torch.Tensor:
        out = w.float().repeat(rows, cols) * scale
        if noise and w.dim() == 2:
            out += torch.randn(out.shape, generator=gen) * (noise * float(out.std()))
        return out

    def put(param, value) -> None:
        param.copy_(value.to(param.dtype))

    put(dst.model.embed_tokens.weight, tiled(src.model.embed_tokens.weight, 1, k, 1.0))
    put(dst.model.norm.weight, src.model.norm.weight.float().repeat(k) / k)
    extra = d.num_hidden_layers - s.num_hidden_layers
    after = insert_after(s.num_hidden_layers, extra) if extra else []
    order = [("new", None)] * after.count(-1)
    for i in range(s.num_hidden_layers):
        order.append(("src", i))
        order += [("new", None)] * after.count(i)
    for layer, (what, i) in zip(dst.model.layers, order):
        if what == "new":
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
            continue
        sl = src.model.layers[i]
        for name in ("input_layernorm", "post_attention_layernorm"):
            put(getattr(layer, name).weight, getattr(sl, name).weight.float().repeat(k))
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            put(getattr(layer.self_attn, name).weight, tiled(getattr(sl.self_attn, name).weight, k, k, 1 / k))
        for name in ("gate_proj", "up_proj"):
            put(getattr(layer.mlp, name).weight, tiled(getattr(sl.mlp, name).weight, kf, k, 1 / k))
        put(layer.mlp.down_proj.weight, tiled(sl.mlp.down_proj.weight, k, kf, 1 / kf))
    dst.tie_weights()
    return dst
