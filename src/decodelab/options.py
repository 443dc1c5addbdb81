"""Typed, bounded, described options: the base of every method config and of SamplingConfig.

    @dataclass(frozen=True, kw_only=True)
    class SpSConfig(Options):
        gamma: int = option(5, "draft tokens per step", lo=1, hi=128)

Each field declares its type (int, float, bool, str, or one of them | None), a one-line help
(shown by `decodelab methods NAME` and `--help`) and its bounds or choices. `__post_init__` checks
them all with one message per bad value: an integer option takes Python, numpy or torch integers
(never bools or 2.5), a float option any finite real number (and inf / -inf with
`infinite=True`), a bool option only a bool. Cross-field
rules go in `validate()`.

Aliases: a config may accept other names for its fields, as a class attribute
`aliases = {"mirostat_tau": "tau"}` (a ClassVar, so not a field): `resolve_aliases(kwargs)` maps
them to the field names (giving a field under two names is an error), `Method.make_config` and
the bench call it, and the CLI adds `--mirostat-tau` as a second spelling of `--tau`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import operator
import types
import typing
from dataclasses import field
from typing import ClassVar

from .errors import DecodeLabError

_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def option(default, help: str, *, lo=None, hi=None, above=None, below=None, choices=None, objects=None,
           auto: bool = False, infinite: bool = False):
    """A config field: `lo`/`hi` are inclusive bounds, `above`/`below` exclusive ones. `objects`: a
    type or tuple of types whose instances the option also takes as they are, from Python only
    (a reward object or callable where the command line gives a spec string). `auto`: the field
    (typed `X | None`) also takes the word "auto", stored as None: the method chooses the value.
    `infinite`: a float option that also takes inf and -inf (never NaN)."""
    meta = {"help": help, "lo": lo, "hi": hi, "above": above, "below": below, "choices": choices,
            "objects": objects, "auto": auto, "infinite": infinite}
    return field(default=default, metadata=meta)


@functools.cache
def _hints(cls: type) -> dict:
    """A config class's resolved type hints, once per class (resolving them costs about 0.5 ms)."""
    return typing.get_type_hints(cls)


class Options:
    """Mixin for frozen keyword-only dataclasses whose fields were made with `option()`."""

    aliases: ClassVar[dict[str, str]] = {}  # another accepted name -> the field it sets

    def __post_init__(self):
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = check_value(f.name, getattr(self, f.name), hints[f.name], f.metadata)
            object.__setattr__(self, f.name, value)  # normalised: numpy ints become ints
        self.validate()

    def validate(self) -> None:
        """Rules that involve several fields; raise DecodeLabError."""

    @classmethod
    def resolve_aliases(cls, kwargs: dict) -> dict:
        """kwargs with every alias replaced by its field's name; a field given twice is an error."""
        out = {}
        for key, value in kwargs.items():
            name = cls.aliases.get(key, key)
            if name in out:
                raise DecodeLabError(f"{name} was given twice (as {name} and as {key}); give it once")
            out[name] = value
        return out

    @classmethod
    def describe(cls) -> list[dict]:
        """One entry per option: name, type, default, help, the allowed values in words and its aliases."""
        hints = _hints(cls)
        return [{"name": f.name, "type": type_name(hints[f.name]), "default": f.default,
                 "help": f.metadata.get("help", ""), "allowed": allowed(hints[f.name], f.metadata),
                 "aliases": sorted(a for a, n in cls.aliases.items() if n == f.name)}
                for f in dataclasses.fields(cls)]


def base_type(hint) -> tuple[type, bool]:
    """(int | float | bool | str, whether None is allowed) of a field's type hint."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) != 1 or kinds[0] not in _KINDS:
        raise TypeError(f"option type must be int, float, bool or str (optionally | None), got {hint}")
    return kinds[0], len(kinds) < len(args)


def type_name(hint) -> str:
    kind, nullable = base_type(hint)
    return kind.__name__ + (" | None" if nullable else "")


def check_value(name: str, value, hint, meta) -> object:
    """The value, normalised to the field's type, or a DecodeLabError saying what was expected."""
    kind, nullable = base_type(hint)
    if (value is None and nullable) or (meta.get("auto") and value == "auto"):
        return None
    objects = meta.get("objects")
    if objects is not None and not isinstance(value, (str, bool, int, float)) and isinstance(value, objects):
        return value
    got = _as_kind(value, kind)
    ok = got is not None and _in_bounds(got, meta)
    if not ok:
        raise DecodeLabError(f"{name} must be {allowed(hint, meta)}, got {value!r}")
    return got


def _as_kind(value, kind):
    if kind is bool:
        return bool(value) if type(value).__name__ in ("bool", "bool_") else None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None  # True is an int to Python, never to an option
    if kind is int:
        try:
            return operator.index(value)  # int, numpy and torch integers; not 2.5, not "5"
        except TypeError:
            return None
    if kind is float:
        return float(value) if isinstance(value, numbers.Real) or _is_real_tensor(value) else None
    return value if isinstance(value, str) else None


def _is_real_tensor(value) -> bool:
    return type(value).__name__ == "Tensor" and value.numel() == 1 and not value.dtype.is_complex


def _in_bounds(v, meta) -> bool:
    if isinstance(v, float) and not math.isfinite(v):
        return bool(meta.get("infinite")) and not math.isnan(v)
    if meta.get("choices") is not None and v not in meta["choices"]:
        return False
    lo, hi, above, below = (meta.get(k) for k in ("lo", "hi", "above", "below"))
    if isinstance(v, str) or isinstance(v, bool):
        return True
    return ((lo is None or v >= lo) and (hi is None or v <= hi) and (above is None or v > above)
            and (below is None or v < below))


def allowed(hint, meta) -> str:
    """The allowed values in words: 'an integer in [1, 128]', 'a number in (0, 1]', 'one of a, b'."""
    kind, nullable = base_type(hint)
    if meta.get("choices") is not None:
        text = "one of " + ", ".join(repr(c) for c in meta["choices"])
    else:
        text = _KINDS[kind]
        lo = meta.get("lo") if meta.get("lo") is not None else meta.get("above")
        hi = meta.get("hi") if meta.get("hi") is not None else meta.get("below")
        if lo is not None and hi is not None:
            text += f" in {'[' if meta.get('lo') is not None else '('}{lo}, {hi}{']' if meta.get('hi') is not None else ')'}"
        elif lo is not None:
            text += f" {'>=' if meta.get('lo') is not None else '>'} {lo}"
        elif hi is not None:
            text += f" {'<=' if meta.get('hi') is not None else '<'} {hi}"
    if meta.get("infinite"):
        text += " (inf and -inf too)"
    objects = meta.get("objects")
    if objects is not None:
        names = [t.__name__ for t in (objects if isinstance(objects, tuple) else (objects,))]
        text += f" (from Python also a {' or a '.join(names)})"
    return text + (" or 'auto'" if meta.get("auto") else " or None" if nullable else "")
