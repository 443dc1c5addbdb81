"""llama.cpp's tokenizer on the converted zoo GGUF (the `starcoder` pre-tokenizer) against the zoo's
transformers tokenizer: the same ids on every held-out corpus file, the same text back."""
import pytest

pytest.importorskip("llama_cpp")

from decodelab.api import encode  # noqa: E402
from decodelab.zoo.corpus import code_files, read_code  # noqa: E402
from decodelab.zoo.tokenizer import load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizers(zoo_models):
    return load_tokenizer(), zoo_models[1].tokenizer


def test_heldout_corpus_tokenizes_identically(tokenizers):
    hf, gg = tokenizers
    files = code_files("heldout")
    assert len(files) > 20
    total = 0
    for path in files:
        text = read_code(path)
        want = hf(text, add_special_tokens=False)["input_ids"]
        assert gg(text, add_special_tokens=False)["input_ids"] == want, path.name
        assert gg.decode(want) == hf.decode(want), path.name
        total += len(want)
    assert total > 100_000


@pytest.mark.parametrize("text", ["x = 12345 + 6.78e9", "<|endoftext|>def f():\n\treturn 'é' * 3<|endoftext|>",
                                  "  \n\n   trailing   ", "naïve café 数字 ١٢٣ ²³ Ⅻ", "", "'s 've 'LL"])
def test_special_and_unicode_text(tokenizers, text):
    hf, gg = tokenizers
    assert encode(gg, text) == encode(hf, text)  # what decodelab.generate encodes a prompt with
    ids = encode(hf, text)
    assert gg.decode(ids) == hf.decode(ids)


def test_vocab_and_special_ids_match(tokenizers):
    hf, gg = tokenizers
    assert gg.get_vocab() == hf.get_vocab() and len(gg) == len(hf)
    assert gg.eos_token_id == hf.eos_token_id == 0 and gg.pad_token_id == hf.pad_token_id
    assert gg.batch_decode([[5, 6], [7]]) == hf.batch_decode([[5, 6], [7]])
    # a byte-level token alone is an incomplete UTF-8 sequence: both decode it to U+FFFD
    partial = [i for i in range(3, 300) if "\ufffd" in hf.decode([i])][:5]
    assert partial and [gg.decode([i]) for i in partial] == [hf.decode([i]) for i in partial]
