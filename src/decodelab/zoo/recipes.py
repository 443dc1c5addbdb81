"""One recipe per zoo model: architecture, data, optimiser and token budget.

Every recipe is run by :func:`decodelab.zoo.training.run` (via ``decodelab zoo train NAME``).
Sizes were chosen for held-out quality within a CPU budget of about an hour on one core:
the standard-library corpus is only ~2.6M training tokens, so bigger models overfit
(see DESIGN.md / issue 3); the best held-out checkpoint is kept (early stopping).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from decodelab.zoo.tasks import LIST_TASKS, TASKS


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str  # "causal" (LlamaForCausalLM) or "mdlm" (ModernBertForMaskedLM with arch type "modernbert", masked diffusion)
    data: str  # "code" (stdlib corpus) or "tasks" (synthetic task suites)
    arch: dict = field(default_factory=dict)
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
    tasks: tuple | None = None  # task recipes: which tasks (None: all)
    task_weights: tuple | None = None  # task recipes: sampling weight per task in ``tasks`` order (None: uniform)
    est_tokens_per_example: int = 12  # task recipes: to turn a token budget into steps
    eval_examples: int = 200  # task recipes: test examples per task for the card
    gen_len: int = 0  # masked-diffusion task recipes: answer canvas length (masks after the prompt)
    t_sampler: str = "uniform"  # mdlm: "uniform" t ~ U(0,1) i.i.d., or "stratified" (MDLM's low-discrepancy sampler)
    description: str = ""

    def describe(self) -> dict:
        d = asdict(self)
        d["tasks"] = list(self.tasks) if self.tasks else None
        d["task_weights"] = list(self.task_weights) if self.task_weights else None
        return d


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            name="code-target",
            kind="causal",
            data="code",
            arch=dict(hidden=192, ffn=512, layers=4, heads=4),
            seq_len=256,
            batch_size=16,
            lr=2e-3,
            weight_decay=0.1,
            tokens=6_000_000,
            eval_every=100,
            patience=6,
            description="Llama causal LM on the stdlib train split; target model for speculative decoding.",
        ),
        Recipe(
            name="code-draft",
            kind="causal",
            data="code",
            arch=dict(hidden=64, ffn=176, layers=2, heads=2),
            seq_len=256,
            batch_size=16,
            lr=3e-3,
            weight_decay=0.1,
            tokens=5_000_000,
            eval_every=100,
            patience=4,
            description="Llama causal LM, 7x fewer parameters (about 7x less compute per token) than code-target, same tokenizer; the speculative draft.",
        ),
        Recipe(
            name="code-mdlm",
            kind="mdlm",
            data="code",
            arch=dict(type="modernbert", hidden=128, ffn=256, layers=4, heads=4, dropout=0.0),
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
        Recipe(
            name="tasks-ar",
            kind="causal",
            data="tasks",
            arch=dict(hidden=128, ffn=384, layers=4, heads=4),
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
        ),
        Recipe(
            name="tasks-mdlm",
            kind="mdlm",
            data="tasks",
            arch=dict(type="modernbert", hidden=128, ffn=256, layers=4, heads=4, dropout=0.0),
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

MODELS: tuple[str, ...] = tuple(RECIPES)
