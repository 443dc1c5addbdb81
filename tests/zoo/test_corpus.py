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


def test_exported_copy_is_the_same_corpus_with_its_python_version(tmp_path, monkeypatch):
    from decodelab.cli import main

    dest = tmp_path / "stdlib"
    assert main(["zoo", "export-corpus", str(dest)]) == 0
    want_text = corpus.code_text("heldout")
    want_rel = [p.relative_to(corpus.stdlib_root()).as_posix() for p in corpus.code_files("train")]
    version = corpus.python_version()
    (dest / corpus.VERSION_FILE).write_text("3.0.1\n")  # as if another Python's copy
    monkeypatch.setenv(corpus.STDLIB_ENV, str(dest))
    corpus._all_files.cache_clear()
    try:
        assert corpus.stdlib_root() == dest
        assert corpus.python_version() == "3.0.1" != version
        assert [p.relative_to(dest).as_posix() for p in corpus.code_files("train")] == want_rel
        assert corpus.code_text("heldout") == want_text
    finally:
        monkeypatch.delenv(corpus.STDLIB_ENV)
        corpus._all_files.cache_clear()


def test_export_and_override_refuse_bad_folders(tmp_path, monkeypatch):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(DecodeLabError, match="not an empty folder"):
        corpus.export_stdlib(tmp_path / "full")
    monkeypatch.setenv(corpus.STDLIB_ENV, str(tmp_path / "full"))
    with pytest.raises(DecodeLabError, match="export-corpus"):
        corpus.stdlib_root()


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(corpus.shutil, "copyfile", fail)
    with pytest.raises(DecodeLabError, match="could not write .*disk full"):
        corpus.export_stdlib(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
