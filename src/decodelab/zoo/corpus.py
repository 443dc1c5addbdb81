"""The offline code corpus: the Python standard library of the running interpreter.

Which files
    Every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]``, except those inside
    a directory named ``site-packages``, ``dist-packages``, ``test``, ``tests``,
    ``idle_test``, ``__pycache__``, ``pydoc_data`` (one 750 kB generated help text) or
    ``encodings`` (mostly generated character-map tables). Test suites are left out
    because they are large, repetitive and unlike the code users write.

Another machine
    ``DECODELAB_STDLIB`` names a folder to read instead of the running interpreter's standard
    library: a copy written by ``export_stdlib`` (``decodelab zoo export-corpus DIR``), with the
    corpus files and the version of the Python they came from. It trains a model on the same
    corpus on a machine whose Python differs (a device machine, say); the card records the
    copy's version.

The split
    By file, with a fixed rule: the file is held out when the first 8 hex digits of
    ``sha256(relative posix path)`` taken as an integer modulo 100 is below
    ``HELDOUT_PERCENT`` (8). No run-time randomness: the same interpreter always gives
    the same split (about 8% of files; another Python version has other files, so the
    bundled checkpoints record the version they were trained on).
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import shutil
import sys
import sysconfig
from pathlib import Path

from decodelab.errors import DecodeLabError

SPLITS = ("train", "heldout")
HELDOUT_PERCENT = 8
EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "pydoc_data", "encodings"}
)
# Files are joined with this separator (the end-of-text token's text) when a corpus is
# tokenized as one stream.
FILE_SEPARATOR = "<|endoftext|>"


STDLIB_ENV = "DECODELAB_STDLIB"
VERSION_FILE = "PYTHON_VERSION"  # in an exported copy: the Python its files came from


def _exported_root() -> Path | None:
    root = os.environ.get(STDLIB_ENV)
    if not root:
        return None
    path = Path(root)
    if not (path / VERSION_FILE).is_file():
        raise DecodeLabError(f"{STDLIB_ENV}={root}: not a corpus copy written by `decodelab zoo export-corpus` "
                             f"(no {VERSION_FILE} file in it)")
    return path


def stdlib_root() -> Path:
    return _exported_root() or Path(sysconfig.get_paths()["stdlib"])


def python_version() -> str:
    """The version of the Python whose standard library the corpus is."""
    root = _exported_root()
    if root is not None:
        return (root / VERSION_FILE).read_text(encoding="utf-8").strip()
    return "%d.%d.%d" % sys.version_info[:3]


def export_stdlib(dest: str | Path) -> int:
    """Copy the corpus files (both splits, the same relative paths) and the version file into
    ``dest``, a new or empty folder, for ``DECODELAB_STDLIB`` on another machine; returns the
    number of files. Written whole or not at all (zoo.staging.staged_dir)."""
    from decodelab.zoo.staging import staged_dir

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DecodeLabError(f"export-corpus: {dest} exists and is not an empty folder")
    files, version = _all_files(), python_version()
    try:
        with staged_dir(dest) as tmp:
            for rel, path in files:
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            (tmp / VERSION_FILE).write_text(version + "\n", encoding="utf-8")
    except OSError as e:
        raise DecodeLabError(f"export-corpus: could not write {dest}: {e}") from None
    return len(files)


def is_heldout(relpath: str) -> bool:
    """The fixed split rule, on a posix relative path such as ``json/decoder.py``."""
    digest = hashlib.sha256(relpath.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 100 < HELDOUT_PERCENT


@functools.lru_cache(maxsize=None)
def _all_files() -> tuple[tuple[str, Path], ...]:
    root = stdlib_root()
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]):
            continue
        if not path.is_file():
            continue
        out.append((rel.as_posix(), path))
    out.sort()
    return tuple(out)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DecodeLabError(f"unknown corpus split {split!r}; choose one of {', '.join(SPLITS)}")


def code_files(split: str) -> list[Path]:
    """The corpus files of ``split`` ("train" or "heldout"), sorted by relative path."""
    _check_split(split)
    want = split == "heldout"
    return [p for rel, p in _all_files() if is_heldout(rel) == want]


def read_code(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def code_text(split: str) -> str:
    """All files of ``split`` concatenated in path order, separated by ``FILE_SEPARATOR``."""
    return FILE_SEPARATOR.join(read_code(p) for p in code_files(split))


def heldout_prefixes(n: int, prefix_tokens: int = 64, seed: int = 0, tokenizer=None) -> list[str]:
    """``n`` prompts cut from held-out files: each is the text of ``prefix_tokens`` tokens
    starting at a line start chosen at random (seeded) in a random held-out file.

    ``tokenizer`` defaults to the zoo tokenizer. Deterministic for a given seed.
    """
    if n <= 0 or prefix_tokens <= 0:
        raise DecodeLabError("heldout_prefixes needs positive n and prefix_tokens")
    if tokenizer is None:
        from decodelab.zoo.tokenizer import load_tokenizer

        tokenizer = load_tokenizer()
    rng = random.Random(seed)
    files = code_files("heldout")
    out: list[str] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n:
            raise DecodeLabError("held-out corpus too small for the requested prefixes")
        text = read_code(rng.choice(files))
        lines = text.splitlines(keepends=True)
        if len(lines) < 4:
            continue
        start = rng.randrange(len(lines))
        chunk = "".join(lines[start:])
        ids = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        if len(ids) < prefix_tokens + 16:  # leave room for a continuation to exist
            continue
        out.append(tokenizer.decode(ids[:prefix_tokens]))
    return out
