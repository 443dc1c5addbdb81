"""Bench rows: a method (or a peer: transformers, llama.cpp, CTranslate2) with its options, parsed
from `NAME[:k=v,k=v]`.

Options are the method's config fields, sampling fields (do_sample, temperature, ...) and
`fixed_budget`, the fixed-compute axis: B = the most tokens the target scores per forward (the
root plus the drafted tokens). Each drafting method declares at registration how it runs at B
(its budget rule: sps's gamma = B - 1, a tree method's node budget, rsd's tree shape, ...); the
peers map it to num_assistant_tokens = B - 1 (constant schedule, no confidence early stop) and
prompt_lookup_num_tokens = B - 1 (llama.cpp's num_pred_tokens = B - 1). Every row reports the
measured tokens per target forward. A method row's `backend=llamacpp` runs it on the llama.cpp
adapter of the same weights (api.load(..., backend="llamacpp")); its output is compared with our
greedy on that backend, which is compared with our greedy on torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..core.sampling import SamplingConfig
from ..errors import DecodeLabError
from ..registry import get

SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingConfig))
# transformers generate() peers: name -> options they accept (besides budget), with defaults
PEERS = {
    "hf:greedy": {},
    "hf:assisted": {"num_assistant_tokens": None, "num_assistant_tokens_schedule": None,
                    "assistant_confidence_threshold": None},
    "hf:prompt-lookup": {"prompt_lookup_num_tokens": 10, "max_matching_ngram_size": None},
    # CPU engines (bench/engines.py), on the same weights converted once
    "llamacpp:greedy": {},
    "llamacpp:prompt-lookup": {"num_pred_tokens": 10, "max_ngram_size": 2},
    "ct2:greedy": {"compute_type": "float32"},
}
ENGINES = ("hf", "llamacpp", "ct2")  # peer name prefixes
CT2_TYPES = ("float32", "int8", "int8_float32", "int16", "bfloat16")  # float32 is the only exact one
BACKENDS = ("torch", "llamacpp")  # a method row's `backend` option: the adapter it runs on
REFERENCES = ("greedy", "hf:greedy")
LLAMACPP_GREEDY = "greedy:backend=llamacpp"  # the reference of rows on the llama.cpp backend
# diffusion cells: the one-token-per-step `llada` row; lossless diffusion rows are also compared
# with llada at their own steps and blocks (the output they reproduce)
DIFFUSION_REFERENCE = "llada"
FIXED = "fixed_budget"  # every run measures these: speedups are ratios to them


@dataclass(frozen=True)
class Row:
    label: str  # as the user wrote it, normalised: "sps:gamma=4"
    method: str  # "sps", or a peer "hf:assisted"
    options: tuple[tuple[str, object], ...] = ()

    @property
    def peer(self) -> bool:
        return self.method in PEERS

    @property
    def kwargs(self) -> dict:
        return dict(self.options)

    @property
    def backend(self) -> str:
        """The adapter a method row runs on: torch (transformers) or llamacpp."""
        return "torch" if self.peer else self.kwargs.get("backend", "torch")

    @property
    def sampling(self) -> bool:
        """Does the row sample (so its output is not compared with greedy)?"""
        if self.peer:
            return False
        return bool(self.kwargs.get("do_sample", get(self.method).modes == ("sample",)))

    @property
    def diffusion(self) -> bool:
        """A masked diffusion method (it runs on diffusion models only, and they only run those)."""
        return not self.peer and get(self.method).family == "diffusion"

    @property
    def needs_draft(self) -> bool:
        return self.method == "hf:assisted" or (not self.peer and get(self.method).draft)

    def claims_greedy_equality(self) -> bool:
        """Rows whose output must equal greedy token for token: lossless methods run greedy, and
        the peers (transformers' assisted and prompt-lookup decoding claim it too)."""
        if self.method == "ct2:greedy":
            return self.kwargs.get("compute_type", "float32") == "float32"
        return self.peer or (get(self.method).lossless is not None and not self.sampling)

    def exact_ref(self) -> str | None:
        """The row this row's output is compared with token for token: our greedy for our greedy on
        another backend and for the engines' greedy; transformers greedy for its other peers;
        llama.cpp's greedy for its prompt lookup; our greedy on the llama.cpp backend for the
        methods run there; our greedy for everything else (None for our greedy itself)."""
        if self.peer:
            return {"hf:greedy": "greedy", "llamacpp:prompt-lookup": "llamacpp:greedy"}.get(
                self.method, "hf:greedy" if self.method.startswith("hf:") else "greedy")
        if self.label in ("greedy", LLAMACPP_GREEDY):
            return None if self.label == "greedy" else "greedy"
        return LLAMACPP_GREEDY if self.backend == "llamacpp" else "greedy"

    def reference(self) -> str:
        """The label of the row this row's output is compared with: our greedy (causal rows);
        for diffusion rows the one-token-per-step llada, at the row's own steps and blocks when it
        claims to reproduce that output."""
        if not self.diffusion:
            return "greedy"
        same = {k: v for k, v in self.options if k in ("steps", "block_length")}
        return make_row(DIFFUSION_REFERENCE, same if self.claims_greedy_equality() else {}).label

    def to_dict(self) -> dict:
        return {"label": self.label, "method": self.method, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict) -> "Row":
        return cls(d["label"], d["method"], tuple(sorted(d.get("options", {}).items())))


def parse_value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip()


def parse_row(text: str) -> Row:
    """`sps:gamma=4,schedule=heuristic` or `hf:assisted:fixed_budget=5` -> Row (validated)."""
    name, _, opts = text.strip().partition(":")
    if name in ENGINES:  # peers carry their own colon: hf:assisted[:k=v], llamacpp:greedy
        sub, _, opts = opts.partition(":")
        name = f"{name}:{sub}"
    options = {}
    for item in filter(None, (s.strip() for s in opts.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DecodeLabError(f"bad method option '{item}' in '{text}'; write NAME:key=value,key=value")
        options[key.strip()] = parse_value(value)
    return make_row(name, options)


def make_row(method: str, options: dict) -> Row:
    options = dict(options)
    if method.partition(":")[0] in ENGINES and ":" in method:
        if method not in PEERS:
            raise DecodeLabError(f"unknown peer '{method}'; known peers: {', '.join(PEERS)}")
        unknown = sorted(set(options) - set(PEERS[method]) - {FIXED})
        if unknown:
            raise DecodeLabError(f"peer '{method}' has no option(s) {', '.join(unknown)}; its options: "
                                 f"{', '.join(list(PEERS[method]) + [FIXED])}")
        for k in ("num_pred_tokens", "max_ngram_size"):
            if k in options and (not isinstance(options[k], int) or isinstance(options[k], bool) or options[k] < 1):
                raise DecodeLabError(f"{method} {k} must be a positive integer, got {options[k]!r}")
        if options.get("compute_type", "float32") not in CT2_TYPES:
            raise DecodeLabError(f"ct2:greedy compute_type must be one of {', '.join(CT2_TYPES)}, "
                                 f"got {options['compute_type']!r}")
    else:
        if options.get("backend", "torch") not in BACKENDS:
            raise DecodeLabError(f"backend must be one of {', '.join(BACKENDS)}, got {options['backend']!r}")
        spec = get(method)  # unknown method -> DecodeLabError listing the known ones
        method_kwargs(spec, options)  # validates the options now, before any model loads
    label = method + (":" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) if options else "")
    row = Row(label, method, tuple(sorted(options.items())))
    if row.peer:
        peer_kwargs(row)  # validates the budget now
    return row


def method_kwargs(spec, options: dict) -> dict:
    """The generate() kwargs for a method row: `fixed_budget` resolved, config validated."""
    kw = dict(options)
    kw.pop("backend", None)  # where the row runs, not a method option
    if FIXED in kw:
        b = _budget(kw.pop(FIXED))
        kw.update(spec.budget_options(b, kw))
    SamplingConfig(**{k: v for k, v in kw.items() if k in SAMPLING_FIELDS})
    spec.make_config(**{k: v for k, v in kw.items() if k not in SAMPLING_FIELDS})
    return kw


def peer_kwargs(row: Row) -> dict:
    """A peer row's engine kwargs: transformers generate()'s, llama.cpp's or CTranslate2's."""
    kw = {k: v for k, v in PEERS[row.method].items() if v is not None}
    opts = row.kwargs
    if FIXED in opts:
        if row.method.endswith(":greedy"):
            raise DecodeLabError(f"{row.method} drafts nothing, so it takes no {FIXED}")
        b = _budget(opts.pop(FIXED))
        if row.method == "llamacpp:prompt-lookup":
            kw.update(num_pred_tokens=b - 1)
        elif row.method == "hf:assisted":
            kw.update(num_assistant_tokens=b - 1, num_assistant_tokens_schedule="constant",
                      assistant_confidence_threshold=0.0)
        else:
            kw.update(prompt_lookup_num_tokens=b - 1)
    kw.update(opts)
    return kw


def _budget(b) -> int:
    if not isinstance(b, int) or isinstance(b, bool) or b < 2:
        raise DecodeLabError(f"{FIXED} must be an integer >= 2 (tokens scored per target forward), got {b!r}")
    return b


def load_suite(path: str) -> tuple[list[Row], dict]:
    """Rows and bench settings from a TOML suite file:

        [bench]                      # optional: any `decodelab bench` option, long name with _
        workloads = ["humaneval"]
        limit = 20
        [[method]]
        name = "sps"
        gamma = 4
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser as the tomli package
        import tomli as tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise DecodeLabError(f"suite file '{path}' not found") from None
    except tomllib.TOMLDecodeError as e:
        raise DecodeLabError(f"suite file '{path}' is not valid TOML: {e}") from None
    rows = []
    for entry in data.get("method", []):
        entry = dict(entry)
        if "name" not in entry:
            raise DecodeLabError(f"suite file '{path}': every [[method]] needs a name")
        rows.append(make_row(entry.pop("name"), entry))
    return rows, dict(data.get("bench", {}))
