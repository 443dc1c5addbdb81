"""Bench fixtures: a tiny random Llama that carries the zoo tokenizer (so text workloads run
without the trained zoo checkpoints), and fast bench settings."""
import pytest
import torch

from decodelab.bench import Settings

FAST = Settings(repeats=1, warmup=0, limit=2, max_new_tokens=8, threads=1)


@pytest.fixture(scope="session")
def tok_model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from decodelab.zoo.tokenizer import load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=96, initializer_range=0.3,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    path = tmp_path_factory.mktemp("tokmodel")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
