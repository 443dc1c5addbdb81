"""One recipe per zoo model: architecture, data, optimiser and token budget.

Every recipe is run by :func:`decodelab.zoo.training.run` (via ``decodelab zoo train NAME``).
Sizes were chosen for held-out quality within a CPU budget of about an hour on one core:
the standard-library corpus is only ~2.6M training tokens, so bigger models overfit
(see DESIGN.md / issue 3); the best held-out checkpoint is kept (early stopping).

``Arch`` and ``Recipe`` are frozen and check themselves when built: a bad recipe is a
``DecodeLabError`` naming the field, never a failure halfway through a training run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from decodelab.errors import DecodeLabError
from decodelab.zoo.tasks import LIST_TASKS, TASKS

KINDS = ("causal", "mdlm")  # LlamaForCausalLM; a masked diffusion LM (MDLM objective)
DATA = ("code", "tasks")  # the stdlib corpus; the synthetic task suites
T_SAMPLERS = ("uniform", "stratified")  # how an MDLM batch draws its masking rates (see losses.sample_t)
# Arch.type -> the recipe kind it builds. "llama-bidirectional": a LlamaForCausalLM whose config
# says `masked_diffusion: true`, run with a full 4D attention mask (no causal mask), so a stock
# decoder with a KV cache serves as a masked diffusion LM (models/hf_diffusion.py)
ARCH_TYPES = {None: "causal", "modernbert": "mdlm", "llama-bidirectional": "mdlm"}


def _int_at_least(owner: str, field: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise DecodeLabError(f"{owner}: {field} must be {what}, got {value!r}")


def _number_in(owner: str, field: str, value, low: float, high: float | None = None, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        span = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'})"
        raise DecodeLabError(f"{owner}: {field} must be a number in {span}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Arch:
    """A zoo model's transformer shape. Optional fields left None are 0.0 in the model and
    absent from ``to_dict()`` (the card's ``recipe.arch``)."""

    type: str | None = None  # None: Llama (causal recipes); "modernbert", "llama-bidirectional" (mdlm recipes)
    hidden: int
    ffn: int
    layers: int
    heads: int
    dropout: float | None = None  # ModernBERT embedding and MLP dropout (Llama has neither)
    attn_dropout: float | None = None

    def __post_init__(self):
        owner = "zoo arch"
        if self.type not in ARCH_TYPES:
            raise DecodeLabError(f"{owner}: type must be one of {list(ARCH_TYPES)}, got {self.type!r}")
        for f in ("hidden", "ffn", "layers", "heads"):
            _int_at_least(owner, f, getattr(self, f), 1)
        if self.hidden % self.heads:
            raise DecodeLabError(f"{owner}: hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        for f in ("dropout", "attn_dropout"):
            if getattr(self, f) is not None:
                _number_in(owner, f, getattr(self, f), 0.0, 1.0)
        if self.dropout is not None and self.type != "modernbert":
            raise DecodeLabError(f"{owner}: dropout is ModernBERT's embedding/MLP dropout; Llama (type {self.type!r}) "
                                 "has none")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class ContextStage:
    """A second stage at a longer context (context extension): after the recipe's main stage at
    ``seq_len``, training goes on from its best checkpoint on windows of ``context.seq_len`` tokens
    with its own batch size, token budget and (lower) learning rate, and the model's context
    (``max_position_embeddings``) becomes ``context.seq_len``. RoPE needs no change: what the
    stage teaches is attending over the longer windows. Cheaper than training at the long
    context from the start, which on this corpus and budget ends worse: fewer, correlated
    windows per step (zoo:code-draft: held-out 4.19 at 1024 from scratch, 4.06 at 256)."""

    seq_len: int
    batch_size: int
    tokens: int
    lr: float
    warmup: int = 20
    eval_every: int = 50
    eval_windows: int = 24  # windows of seq_len tokens scored during the stage

    def check(self, owner: str, recipe: "Recipe") -> None:
        for f in ("seq_len", "batch_size", "tokens", "eval_every", "eval_windows"):
            _int_at_least(owner, f"context.{f}", getattr(self, f), 1)
        _int_at_least(owner, "context.warmup", self.warmup, 0)
        _number_in(owner, "context.lr", self.lr, 0.0, low_open=True)
        if recipe.kind != "causal" or recipe.data != "code":
            raise DecodeLabError(f"{owner}: a context stage is for causal recipes on code windows")
        if self.seq_len <= recipe.seq_len:
            raise DecodeLabError(f"{owner}: context.seq_len ({self.seq_len}) must exceed seq_len ({recipe.seq_len})")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How one zoo model is trained: run by ``training.run``; ``describe()`` goes on its card."""

    name: str
    kind: str  # one of KINDS
    data: str  # one of DATA
    arch: Arch
    seq_len: int = 256
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 100
    tokens: int = 1_000_000  # default token budget (target tokens for task recipes)
    eval_every: int = 200
    eval_windows: int | None = 96  # held-out windows scored during training (all at the end)
    log_every: int = 10
    patience: int = 0  # stop after this many evaluations without improvement (0: never)
    tasks: tuple[str, ...] | None = None  # task recipes: which tasks (None: all)
    task_weights: tuple[float, ...] | None = None  # task recipes: sampling weight per task in ``tasks`` order (None: uniform)
    est_tokens_per_example: int = 12  # task recipes: to turn a token budget into steps
    eval_examples: int = 200  # task recipes: test examples per task for the card
    gen_len: int = 0  # masked-diffusion task recipes: answer canvas length (masks after the prompt)
    t_sampler: str = "uniform"  # mdlm: one of T_SAMPLERS
    context: ContextStage | None = None  # a second, longer-context stage (None: one stage)
    # a zoo model whose checkpoint this model grows from (zoo.growth: wider and deeper, the same
    # function) instead of a fresh initialisation (None: fresh)
    grow_from: str | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise DecodeLabError(f"zoo recipe: name must be a non-empty string, got {self.name!r}")
        owner = f"zoo recipe {self.name!r}"
        for f, allowed in (("kind", KINDS), ("data", DATA), ("t_sampler", T_SAMPLERS)):
            if getattr(self, f) not in allowed:
                raise DecodeLabError(f"{owner}: {f} must be one of {list(allowed)}, got {getattr(self, f)!r}")
        if not isinstance(self.arch, Arch):
            raise DecodeLabError(f"{owner}: arch must be an Arch, got {type(self.arch).__name__}")
        if ARCH_TYPES[self.arch.type] != self.kind:
            want = " or ".join(repr(t) for t, k in ARCH_TYPES.items() if k == self.kind)
            raise DecodeLabError(f"{owner}: a {self.kind} recipe needs arch type {want}, got {self.arch.type!r}")
        self._check_numbers(owner)
        self._check_tasks(owner)
        if self.context is not None:
            if not isinstance(self.context, ContextStage):
                raise DecodeLabError(f"{owner}: context must be a ContextStage, got {type(self.context).__name__}")
            self.context.check(owner, self)
        if self.grow_from is not None:
            if not isinstance(self.grow_from, str) or self.grow_from == self.name:
                raise DecodeLabError(f"{owner}: grow_from must name another zoo model, got {self.grow_from!r}")
            if self.kind != "causal" or self.arch.type is not None:
                raise DecodeLabError(f"{owner}: grow_from grows a Llama causal LM; this recipe is {self.kind}")

    @property
    def max_length(self) -> int:
        """The context the finished model has: the context stage's windows, else seq_len."""
        return self.context.seq_len if self.context is not None else self.seq_len

    def stages(self) -> list["Recipe"]:
        """The recipe of each training stage: itself, then its context stage as a one-stage recipe."""
        if self.context is None:
            return [self]
        c = self.context
        return [self, replace(self, seq_len=c.seq_len, batch_size=c.batch_size, tokens=c.tokens, lr=c.lr,
                              warmup=c.warmup, eval_every=c.eval_every, eval_windows=c.eval_windows, context=None)]

    def _check_numbers(self, owner: str) -> None:
        for f in ("seq_len", "batch_size", "tokens", "eval_every", "log_every", "est_tokens_per_example", "eval_examples"):
            _int_at_least(owner, f, getattr(self, f), 1)
        for f in ("warmup", "patience", "gen_len"):
            _int_at_least(owner, f, getattr(self, f), 0)
        if self.eval_windows is not None:
            _int_at_least(owner, "eval_windows", self.eval_windows, 1)
        _number_in(owner, "lr", self.lr, 0.0, low_open=True)
        _number_in(owner, "weight_decay", self.weight_decay, 0.0)

    def _check_tasks(self, owner: str) -> None:
        if self.data != "tasks" and (self.tasks is not None or self.task_weights is not None):
            raise DecodeLabError(f"{owner}: tasks and task_weights are for data='tasks' recipes")
        if self.tasks is not None:
            if not isinstance(self.tasks, tuple) or not self.tasks or len(set(self.tasks)) != len(self.tasks):
                raise DecodeLabError(f"{owner}: tasks must be a non-empty tuple of distinct task names, got {self.tasks!r}")
            unknown = [t for t in self.tasks if t not in TASKS]
            if unknown:
                raise DecodeLabError(f"{owner}: unknown tasks {unknown}; known tasks: {', '.join(TASKS)}")
        if self.task_weights is not None:
            names = self.tasks or TASKS
            if not isinstance(self.task_weights, tuple) or len(self.task_weights) != len(names):
                raise DecodeLabError(f"{owner}: task_weights must be a tuple of {len(names)} weights, one per task "
                                     f"({', '.join(names)}), got {self.task_weights!r}")
            for w in self.task_weights:
                _number_in(owner, "each task weight", w, 0.0, low_open=True)
        canvas = self.kind == "mdlm" and self.data == "tasks"  # the only recipes with an answer canvas
        if canvas and not 0 < self.gen_len < self.seq_len:
            raise DecodeLabError(f"{owner}: an mdlm task recipe needs 0 < gen_len < seq_len ({self.seq_len}), "
                                 f"got gen_len={self.gen_len}")
        if not canvas and self.gen_len:
            raise DecodeLabError(f"{owner}: gen_len is the answer canvas of mdlm task recipes; must be 0 here, "
                                 f"got {self.gen_len}")

    def describe(self) -> dict:
        """The card's ``recipe``: every field, ``arch`` as a dict, tuples as lists."""
        d = asdict(self)
        d["arch"] = self.arch.to_dict()
        d["tasks"] = list(self.tasks) if self.tasks else None
        d["task_weights"] = list(self.task_weights) if self.task_weights else None
        if self.context is None:
            del d["context"]  # one-stage recipes' cards never had the field
        if self.grow_from is None:
            del d["grow_from"]  # nor had recipes that start fresh
        return d


TASKS_AR = Recipe(
    name="tasks-ar",
    kind="causal",
    data="tasks",
    arch=Arch(hidden=128, ffn=384, layers=4, heads=4),
    seq_len=64,
    batch_size=32,
    lr=3e-3,
    weight_decay=0.05,
    warmup=100,
    tokens=2_400_000,
    eval_every=250,
    tasks=TASKS,
    # the harder tasks are sampled more often
    task_weights=(1, 1, 3, 1, 1, 1, 1, 1, 1, 1, 6),
    est_tokens_per_example=21,
    log_every=20,
    description="Llama causal LM on the task suites (loss on the answer tokens).",
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            name="code-target",
            kind="causal",
            data="code",
            arch=Arch(hidden=192, ffn=512, layers=4, heads=4),
            seq_len=256,
            batch_size=16,
            lr=2e-3,
            weight_decay=0.1,
            tokens=6_000_000,
            eval_every=100,
            patience=6,
            context=ContextStage(seq_len=1024, batch_size=4, tokens=1_500_000, lr=5e-4),
            description="Llama causal LM on the stdlib train split; target model for speculative decoding.",
        ),
        Recipe(
            name="code-draft",
            kind="causal",
            data="code",
            arch=Arch(hidden=64, ffn=176, layers=2, heads=2),
            seq_len=256,
            batch_size=16,
            lr=3e-3,
            weight_decay=0.1,
            tokens=5_000_000,
            eval_every=100,
            patience=4,
            context=ContextStage(seq_len=1024, batch_size=4, tokens=1_500_000, lr=5e-4),
            description="Llama causal LM, 7x fewer parameters (about 7x less compute per token) than code-target, same tokenizer; the speculative draft.",
        ),
        # 26M parameters, 105 MB in f32: several times a CPU's last-level cache, the memory-bound
        # regime of real LLMs. Trained from scratch as code-target is (256-token windows, then a
        # 1024-token context stage), with a larger batch and a lower peak lr for its size; on 2 CPU
        # threads in bf16 autocast 58 + 17 min (docs/zoo.md)
        Recipe(
            name="code-target-l",
            kind="causal",
            data="code",
            arch=Arch(hidden=576, ffn=1536, layers=6, heads=12),
            seq_len=256,
            batch_size=32,
            lr=1e-3,
            weight_decay=0.1,
            warmup=100,
            tokens=10_000_000,
            eval_every=100,
            eval_windows=96,
            patience=5,
            context=ContextStage(seq_len=1024, batch_size=8, tokens=2_000_000, lr=2.5e-4, eval_every=25,
                                 eval_windows=48),
            description="Llama causal LM, 10x code-target's parameters (26M; 105 MB in f32, beyond a CPU's "
                        "last-level cache); same tokenizer, code-draft is its draft.",
        ),
        Recipe(
            name="code-mdlm",
            kind="mdlm",
            data="code",
            arch=Arch(type="modernbert", hidden=128, ffn=256, layers=4, heads=4, dropout=0.0),
            seq_len=256,
            batch_size=16,
            lr=2e-3,
            weight_decay=0.1,
            tokens=32_000_000,
            t_sampler="stratified",
            eval_every=400,
            patience=4,
            description="ModernBERT-architecture (RoPE, bidirectional) masked diffusion LM (MDLM/LLaDA objective) on the stdlib train split.",
        ),
        TASKS_AR,
        # the same data and schedule in code-draft's shape: tasks-ar's draft
        replace(TASKS_AR, name="tasks-draft", arch=Arch(hidden=64, ffn=176, layers=2, heads=2),
                description="Llama causal LM on the task suites, code-draft's shape (about 4x fewer parameters "
                            "than tasks-ar), same tokenizer; tasks-ar's draft (speculative decoding, "
                            "entropy-adaptive decoding)."),
        Recipe(
            name="tasks-mdlm",
            kind="mdlm",
            data="tasks",
            arch=Arch(type="modernbert", hidden=128, ffn=256, layers=4, heads=4, dropout=0.0),
            seq_len=64,
            gen_len=24,
            tasks=LIST_TASKS,
            # copy, reverse and sort (the headline tasks) are sampled 3x as often as each edit task
            task_weights=(3, 3, 3, 1, 1, 1, 1, 1, 1, 1),
            t_sampler="stratified",
            batch_size=32,
            lr=3e-3,
            weight_decay=0.05,
            warmup=200,
            tokens=16_000_000,
            eval_every=1000,
            est_tokens_per_example=24,
            log_every=50,
            description="ModernBERT-architecture (RoPE, bidirectional) masked diffusion LM on the waiting-line list tasks (not arithmetic): prompt kept, "
            "a 24-token answer canvas (answer, end-of-text, end-of-text filler) masked at rate t.",
        ),
    ]
}

# tasks-mdlm's data, shape and training on a stock decoder that keeps keys and values (Fast-dLLM's caches)
RECIPES["tasks-mdlm-llama"] = replace(
    RECIPES["tasks-mdlm"], name="tasks-mdlm-llama",
    arch=Arch(type="llama-bidirectional", hidden=128, ffn=256, layers=4, heads=4),
    description="Llama run bidirectionally (a full 4D attention mask; config `masked_diffusion: true`) as a masked "
    "diffusion LM with a KV cache, trained like tasks-mdlm on the waiting-line list tasks: prompt kept, a 24-token "
    "answer canvas masked at rate t.")

MODELS: tuple[str, ...] = tuple(RECIPES)
