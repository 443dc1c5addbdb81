"""Zoo models: a recipe's fresh architecture, or the weights of an earlier checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from decodelab.zoo.recipes import Recipe


def build_model(recipe: Recipe, tokenizer):
    """A fresh model of ``recipe.arch``, initialised from the global torch generator."""
    a = recipe.arch
    dims = dict(  # the same in every architecture's config
        vocab_size=len(tokenizer),
        hidden_size=a.hidden,
        intermediate_size=a.ffn,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        max_position_embeddings=recipe.seq_len,
        attention_dropout=a.attn_dropout or 0.0,
        tie_word_embeddings=True,
    )
    eos = tokenizer.eos_token_id
    if a.type in (None, "llama-bidirectional"):  # Recipe guarantees kind causal for None, mdlm for the other
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(**dims, num_key_value_heads=a.heads, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=eos, bos_token_id=eos)
        if a.type == "llama-bidirectional":  # the marker decodelab.load reads (models/hf_diffusion.py)
            cfg.masked_diffusion = True
            cfg.mask_token_id = tokenizer.mask_token_id
        return LlamaForCausalLM(cfg)
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    cfg = ModernBertConfig(
        **dims,
        global_attn_every_n_layers=1,  # every layer attends to the whole canvas (RoPE positions)
        local_attention=recipe.seq_len,
        embedding_dropout=a.dropout or 0.0,
        mlp_dropout=a.dropout or 0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
        bos_token_id=eos,
        cls_token_id=eos,
        sep_token_id=eos,
    )
    cfg.mask_token_id = tokenizer.mask_token_id
    return ModernBertForMaskedLM(cfg)


def auto_class_name(recipe: Recipe) -> str:
    """The transformers Auto class that loads the checkpoint (a bidirectional Llama is a
    LlamaForCausalLM that the diffusion adapter runs with a full attention mask)."""
    return "AutoModelForMaskedLM" if recipe.arch.type == "modernbert" else "AutoModelForCausalLM"


def load_checkpoint(recipe: Recipe, path: str | Path, device: str = "cpu"):
    """The float32 weights saved in checkpoint directory ``path``, read fully into memory
    (so ``path`` may be replaced afterwards: continuing a checkpoint in place)."""
    import transformers

    cls = getattr(transformers, auto_class_name(recipe))
    return cls.from_pretrained(str(path), dtype=torch.float32).to(device)


def count_params(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n
