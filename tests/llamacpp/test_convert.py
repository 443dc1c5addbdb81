"""`decodelab convert --to gguf`: tensors and metadata round trip, dtypes, and every refusal leaving
nothing behind."""
import json

import numpy as np
import pytest

pytest.importorskip("gguf")

from decodelab import zoo  # noqa: E402
from decodelab.cli import main  # noqa: E402
from decodelab.convert import convert  # noqa: E402
from decodelab.convert.to_gguf import _pairs_from_halves  # noqa: E402
from decodelab.errors import DecodeLabError  # noqa: E402


def _read(path):
    import gguf

    r = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in r.fields.items()}
    tensors = {t.name: t for t in r.tensors}
    return fields, tensors


def _hf_weights(src):
    from safetensors.torch import load_file

    return {k: v.float().numpy() for k, v in load_file(str(src / "model.safetensors")).items()}


def test_zoo_round_trip_tensors_and_metadata(zoo_gguf):
    src = zoo.resolve("code-target")
    config = json.loads((src / "config.json").read_text())
    fields, tensors = _read(zoo_gguf["code-target"])
    assert fields["general.architecture"] == "llama"
    assert fields["llama.context_length"] == config["max_position_embeddings"]
    assert fields["llama.embedding_length"] == config["hidden_size"]
    assert fields["llama.block_count"] == config["num_hidden_layers"]
    assert fields["llama.attention.head_count"] == config["num_attention_heads"]
    assert fields["llama.rope.dimension_count"] == config["head_dim"]
    assert fields["llama.rope.freq_base"] == config["rope_parameters"]["rope_theta"]
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "starcoder"
    assert len(fields["tokenizer.ggml.tokens"]) == config["vocab_size"]
    assert fields["tokenizer.ggml.eos_token_id"] == 0 and fields["decodelab.eos_token_ids"] == [0]
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|pad|>", "<|mask|>"]
    assert fields["tokenizer.ggml.token_type"][:4] == [3, 3, 3, 1]  # control tokens, then normal ones

    hf = _hf_weights(src)
    assert "output.weight" not in tensors  # tied: llama.cpp reads token_embd
    assert len(tensors) == len(hf)
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    checks = {"token_embd.weight": hf["model.embed_tokens.weight"], "output_norm.weight": hf["model.norm.weight"]}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        checks |= {f"blk.{i}.attn_q.weight": _pairs_from_halves(hf[p + "self_attn.q_proj.weight"], heads),
                   f"blk.{i}.attn_k.weight": _pairs_from_halves(hf[p + "self_attn.k_proj.weight"], kv),
                   f"blk.{i}.attn_v.weight": hf[p + "self_attn.v_proj.weight"],
                   f"blk.{i}.attn_output.weight": hf[p + "self_attn.o_proj.weight"],
                   f"blk.{i}.ffn_gate.weight": hf[p + "mlp.gate_proj.weight"],
                   f"blk.{i}.ffn_up.weight": hf[p + "mlp.up_proj.weight"],
                   f"blk.{i}.ffn_down.weight": hf[p + "mlp.down_proj.weight"],
                   f"blk.{i}.attn_norm.weight": hf[p + "input_layernorm.weight"],
                   f"blk.{i}.ffn_norm.weight": hf[p + "post_attention_layernorm.weight"]}
    for name, want in checks.items():
        got = np.asarray(tensors[name].data)
        assert got.dtype == np.float32 and got.shape == want.shape, name
        assert np.array_equal(got, want), name


def test_pairs_from_halves_is_rotate_half_to_adjacent_pairs():
    """Row h * d/2 + i of a head moves to row 2i + h: RoPE's pair (i, i + d/2) becomes (2i, 2i + 1)."""
    d, heads = 8, 2
    w = np.arange(heads * d)[:, None].repeat(3, 1).astype(np.float32)
    out = _pairs_from_halves(w, heads)[:, 0].astype(int).tolist()
    assert out == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
    assert _pairs_from_halves(np.arange(16.0), heads).astype(int).tolist() == out  # biases alike


def test_qwen2_keeps_rows_and_writes_biases(tiny_gguf, tiny_dirs):
    from pathlib import Path

    fields, tensors = _read(tiny_gguf["qwen2"][1])
    hf = _hf_weights(Path(tiny_dirs["qwen2"][0]))
    assert fields["general.architecture"] == "qwen2" and fields["tokenizer.ggml.model"] == "none"
    assert fields["qwen2.vocab_size"] == 96
    assert np.array_equal(np.asarray(tensors["blk.0.attn_q.weight"].data), hf["model.layers.0.self_attn.q_proj.weight"])
    assert np.array_equal(np.asarray(tensors["blk.1.attn_k.bias"].data), hf["model.layers.1.self_attn.k_proj.bias"])


def test_f16_rounds_matrices_and_keeps_norms_f32(tmp_path):
    out = convert("zoo:code-draft", str(tmp_path / "d16.gguf"), dtype="f16")
    _, tensors = _read(out)
    hf = _hf_weights(zoo.resolve("code-draft"))
    emb = np.asarray(tensors["token_embd.weight"].data)
    assert emb.dtype == np.float16 and np.array_equal(emb, hf["model.embed_tokens.weight"].astype(np.float16))
    assert np.asarray(tensors["output_norm.weight"].data).dtype == np.float32


def test_cli_convert_and_refusals(tmp_path, tiny_dirs, capsys):
    out = tmp_path / "draft.gguf"
    assert main(["convert", "--to", "gguf", "zoo:code-draft", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    before = out.stat().st_mtime_ns
    cases = [
        (["zoo:code-draft", str(out)], "already exists; pass --force"),  # an existing OUT
        (["zoo:code-draft", str(tmp_path / "x.gguf"), "--dtype", "int3"], "unknown GGUF dtype"),
        ([tiny_dirs["gpt2"][0], str(tmp_path / "g.gguf")], "supports LlamaForCausalLM"),  # unsupported arch
        ([tiny_dirs["mistral-sw8"][0], str(tmp_path / "m.gguf")], "sliding window of 8"),
        ([str(tmp_path / "nowhere"), str(tmp_path / "n.gguf")], "not a model directory"),
    ]
    for args, message in cases:
        assert main(["convert", "--to", "gguf", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    assert out.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["draft.gguf"]  # nothing half-written
    assert main(["convert", "--to", "gguf", "zoo:code-draft", str(out), "--force"]) == 0


def test_failure_midway_leaves_no_file(tmp_path, monkeypatch):
    from decodelab.convert import to_gguf

    def broken(*args, **kwargs):
        yield "token_embd.weight", np.zeros((4, 4), np.float32), None
        raise DecodeLabError("disk full (simulated)")

    monkeypatch.setattr(to_gguf, "_tensors", broken)
    with pytest.raises(DecodeLabError, match="simulated"):
        convert("zoo:code-draft", str(tmp_path / "x.gguf"))
    assert list(tmp_path.iterdir()) == []


def test_q8_0_is_lossy_but_close(tmp_path):
    import gguf

    out = convert("zoo:code-draft", str(tmp_path / "q.gguf"), dtype="q8_0")
    fields, tensors = _read(out)
    t = tensors["blk.0.ffn_up.weight"]
    assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
    got = gguf.quants.dequantize(t.data, t.tensor_type)
    want = _hf_weights(zoo.resolve("code-draft"))["model.layers.0.mlp.up_proj.weight"]
    assert not np.array_equal(got, want) and np.abs(got - want).max() < 0.01 * np.abs(want).max()
    assert fields["general.file_type"] == 7
