import pytest

from decodelab.errors import DecodeLabError
from decodelab.zoo import corpus


def test_splits_deterministic_disjoint_and_big_enough():
    tr, ho = corpus.code_files("train"), corpus.code_files("heldout")
    assert tr == corpus.code_files("train") and ho == corpus.code_files("heldout")
    assert tr and ho and not set(tr) & set(ho)
    assert len(ho) / (len(tr) + len(ho)) >= 0.05
    root = corpus.stdlib_root()
    for p in tr + ho:
        parts = p.relative_to(root).parts
        assert p.suffix == ".py"
        assert not set(parts[:-1]) & corpus.EXCLUDED_DIRS


def test_split_rule_is_a_fixed_function_of_the_path():
    # sha256 of the relative path decides; the same path always lands in the same split
    assert corpus.is_heldout("json/decoder.py") == corpus.is_heldout("json/decoder.py")
    root = corpus.stdlib_root()
    for p in corpus.code_files("heldout")[:20]:
        assert corpus.is_heldout(p.relative_to(root).as_posix())
    for p in corpus.code_files("train")[:20]:
        assert not corpus.is_heldout(p.relative_to(root).as_posix())


def test_code_text_joins_files():
    text = corpus.code_text("heldout")
    assert text.count(corpus.FILE_SEPARATOR) == len(corpus.code_files("heldout")) - 1


def test_heldout_prefixes_deterministic():
    a = corpus.heldout_prefixes(3, 32, seed=1)
    assert a == corpus.heldout_prefixes(3, 32, seed=1)
    assert a != corpus.heldout_prefixes(3, 32, seed=2)
    assert all(isinstance(s, str) and s for s in a)


def test_bad_split_and_arguments():
    with pytest.raises(DecodeLabError, match="split"):
        corpus.code_files("validation")
    with pytest.raises(DecodeLabError):
        corpus.heldout_prefixes(0)
