"""Write a checkpoint directory whole or not at all.

``staged_dir(out)`` hands out a fresh hidden directory next to ``out`` (same filesystem,
so the final move is a rename). When the block ends normally it takes the place of
``out`` (a previous checkpoint there is replaced); when it raises (an error, Ctrl-C)
it is removed and ``out`` is left as it was. Only a process killed by a signal
other than SIGINT (SIGTERM, SIGKILL) leaves a ``.NAME.partial-PID-*`` directory behind;
it is safe to delete.
"""

from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

from decodelab.errors import DecodeLabError

# what may be in an --out directory that a new checkpoint replaces as a whole
CHECKPOINT_MARKERS = ("config.json", "card.json", "training_log.jsonl")
STOP_FILE = "STOP"


def check_replaceable(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a directory with other things than a checkpoint in it
    (replacing it would delete them)."""
    if out.is_dir():
        names = {p.name for p in out.iterdir()} - {STOP_FILE}
        if names and not names & set(CHECKPOINT_MARKERS):
            raise DecodeLabError(f"--out {out}: the directory exists and holds no zoo checkpoint; training "
                                 "replaces it as a whole, so choose a new or checkpoint directory")
    elif out.exists():
        raise DecodeLabError(f"--out {out}: exists and is not a directory")


def _sibling(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def replace_dir(new: Path, out: Path) -> None:
    """Move directory ``new`` to ``out``; an existing ``out`` is set aside first and deleted after."""
    if not out.exists():
        os.replace(new, out)
        return
    old = _sibling(out, "old")
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)  # put the previous checkpoint back
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(out: str | Path):
    """Yield an empty directory that becomes ``out`` when the block succeeds (see the module doc)."""
    out = Path(out)
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "partial")
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful move
