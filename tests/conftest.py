"""Shared fixtures: tiny randomly initialised transformers models of several architectures, saved
and loaded back through decodelab.load, and ToyLM pairs with exact tables."""
from __future__ import annotations

import pytest
import torch
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config,
                          GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

import decodelab
from decodelab.models import ToyLM

# One intra-op thread: the test models are tiny, and with several threads each small op pays for
# thread wake-ups (38x slower under load on 2 cores, measured). Results do not depend on it.
torch.set_num_threads(1)

VOCAB = 96
# Dimensions every tiny decoder shares. initializer_range well above the default 0.02 makes the
# random models' logits peaked, so greedy paths are far from ties and float32 differences between
# batched and sequential forwards cannot flip an argmax.
_DIMS = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, max_position_embeddings=512, initializer_range=0.3, bos_token_id=None, eos_token_id=None,
             pad_token_id=None)
# Windows of 8 are smaller than every test sequence (prompts plus 40-48 new tokens), so sliding
# layers really drop keys; 2047 is larger than any of them.
WINDOW = 8


def _alternating(layers: int) -> list[str]:
    """Gemma's pattern, sliding first: 1 layer -> [sliding], 2 -> [sliding, full]. (The Gemmas
    below untie their embeddings: tied, a tiny random Gemma repeats one token forever.)"""
    return ["sliding_attention", "full_attention"][:layers]


_CONFIGS = {
    "llama": lambda layers: LlamaForCausalLM(LlamaConfig(**_DIMS, num_hidden_layers=layers)),
    "gpt2": lambda layers: GPT2LMHeadModel(GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=4, n_positions=512, initializer_range=0.3,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)),
    "qwen2": lambda layers: Qwen2ForCausalLM(Qwen2Config(**_DIMS, num_hidden_layers=layers,
                                                          use_sliding_window=False)),
    "gpt-neox": lambda layers: GPTNeoXForCausalLM(GPTNeoXConfig(**_DIMS, num_hidden_layers=layers)),
    # every layer slides, one mask for all layers
    "mistral-sw8": lambda layers: MistralForCausalLM(MistralConfig(**_DIMS, num_hidden_layers=layers,
                                                                    sliding_window=WINDOW)),
    # Phi-3-mini-4k's window, larger than any test sequence: the sliding path where it never bites
    "phi3-sw2047": lambda layers: Phi3ForCausalLM(Phi3Config(**_DIMS, num_hidden_layers=layers,
                                                              sliding_window=2047)),
    # layers from max_window_layers on slide: 2 layers -> [full, sliding], a mask per layer type
    "qwen2-sw8": lambda layers: Qwen2ForCausalLM(Qwen2Config(**_DIMS, num_hidden_layers=layers,
                                                              use_sliding_window=True, sliding_window=WINDOW,
                                                              max_window_layers=1)),
    "gemma2-sw8": lambda layers: Gemma2ForCausalLM(Gemma2Config(**_DIMS, num_hidden_layers=layers,
                                                                 sliding_window=WINDOW, tie_word_embeddings=False,
                                                                 layer_types=_alternating(layers))),
    "gemma3-sw8": lambda layers: Gemma3ForCausalLM(Gemma3TextConfig(**_DIMS, num_hidden_layers=layers,
                                                                     sliding_window=WINDOW, tie_word_embeddings=False,
                                                                     layer_types=_alternating(layers))),
    # Mistral's masks on Phi-3 (one sliding mask_function for all layers)
    "phi3-sw8": lambda layers: Phi3ForCausalLM(Phi3Config(**_DIMS, num_hidden_layers=layers,
                                                           sliding_window=WINDOW)),
}
# every architecture: the adapter, greedy-parity and registry-wide tests (any_arch_pair) run on each
ALL_ARCHS = tuple(_CONFIGS)
# tiny_pair: each method's own tests (drafter behaviour, tau, options) run on these; its exactness on
# every architecture is the registry-wide tests' job
ARCHS = ("llama", "gpt2", "qwen2")


def make_tiny(arch: str, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return _CONFIGS[arch](layers).eval()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """arch -> (target dir, draft dir): a 2-layer target and a 1-layer draft, saved with
    save_pretrained (safetensors, no tokenizer files)."""
    root = tmp_path_factory.mktemp("tiny")
    dirs = {}
    for arch in ALL_ARCHS:
        t, d = root / f"{arch}-target", root / f"{arch}-draft"
        make_tiny(arch, 2, seed=0).save_pretrained(t)
        make_tiny(arch, 1, seed=1).save_pretrained(d)
        dirs[arch] = (str(t), str(d))
    return dirs


def _pair(tiny_dirs, arch):
    t, d = tiny_dirs[arch]
    return arch, decodelab.load(t), decodelab.load(d)


@pytest.fixture(params=ARCHS)
def tiny_pair(request, tiny_dirs):
    """(arch, target adapter, draft adapter) loaded through decodelab.load, for each of ARCHS."""
    return _pair(tiny_dirs, request.param)


@pytest.fixture(params=ALL_ARCHS)
def any_arch_pair(request, tiny_dirs):
    """(arch, target adapter, draft adapter) for every architecture, sliding windows included."""
    return _pair(tiny_dirs, request.param)


@pytest.fixture
def toy_pair():
    """(target, draft) ToyLMs over 6 tokens with different order-2 tables."""
    return ToyLM.random(6, order=2, seed=0, scale=1.5), ToyLM.random(6, order=2, seed=1, scale=1.5)
