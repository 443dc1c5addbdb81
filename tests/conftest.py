"""Shared fixtures: tiny randomly initialised transformers models of several architectures, saved
and loaded back through decodelab.load, and ToyLM pairs with exact tables."""
from __future__ import annotations

import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

import decodelab
from decodelab.models import ToyLM

# One intra-op thread: the test models are tiny, and with several threads each small op pays for
# thread wake-ups (38x slower under load on 2 cores, measured). Results do not depend on it.
torch.set_num_threads(1)

VOCAB = 96
# initializer_range well above the default 0.02 makes the random models' logits peaked, so greedy
# paths are far from ties and float32 differences between batched and sequential forwards cannot
# flip an argmax.
_CONFIGS = {
    "llama": lambda layers, seed: LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.3,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)),
    "gpt2": lambda layers, seed: GPT2LMHeadModel(GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=4, n_positions=512, initializer_range=0.3,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)),
    "qwen2": lambda layers, seed: Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.3,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, use_sliding_window=False)),
}
ARCHS = tuple(_CONFIGS)


def make_tiny(arch: str, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return _CONFIGS[arch](layers, seed).eval()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """arch -> (target dir, draft dir): a 2-layer target and a 1-layer draft, saved with
    save_pretrained (safetensors, no tokenizer files)."""
    root = tmp_path_factory.mktemp("tiny")
    dirs = {}
    for arch in ARCHS:
        t, d = root / f"{arch}-target", root / f"{arch}-draft"
        make_tiny(arch, 2, seed=0).save_pretrained(t)
        make_tiny(arch, 1, seed=1).save_pretrained(d)
        dirs[arch] = (str(t), str(d))
    return dirs


@pytest.fixture(params=ARCHS)
def tiny_pair(request, tiny_dirs):
    """(arch, target adapter, draft adapter) loaded through decodelab.load, for each architecture."""
    t, d = tiny_dirs[request.param]
    return request.param, decodelab.load(t), decodelab.load(d)


@pytest.fixture
def toy_pair():
    """(target, draft) ToyLMs over 6 tokens with different order-2 tables."""
    return ToyLM.random(6, order=2, seed=0, scale=1.5), ToyLM.random(6, order=2, seed=1, scale=1.5)
