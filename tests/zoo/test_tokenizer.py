from transformers import AutoTokenizer

from decodelab.zoo import tokenizer as Z
from decodelab.zoo.tasks import NAMES


def test_bundled_tokenizer_loads_as_fast_with_specials():
    tok = AutoTokenizer.from_pretrained(str(Z.BUNDLED_DIR))
    assert tok.is_fast
    assert tok.eos_token == Z.EOS and tok.pad_token == Z.PAD and tok.mask_token == Z.MASK
    assert len({tok.eos_token_id, tok.pad_token_id, tok.mask_token_id}) == 3
    assert 4000 <= len(tok) <= 8192
    s = "def f(x):\n    return x + 123  # ok\n"
    ids = tok(s, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == s
    digits = tok.convert_ids_to_tokens(tok("9876", add_special_tokens=False)["input_ids"])
    assert digits == ["9", "8", "7", "6"]  # one token per digit


def test_task_names_are_two_tokens_with_distinct_first_tokens():
    tok = Z.load_tokenizer()
    firsts = set()
    for n in NAMES:
        ids = tok(" " + n, add_special_tokens=False)["input_ids"]
        assert len(ids) == 2, n
        firsts.add(ids[0])
    assert len(firsts) == len(NAMES)
