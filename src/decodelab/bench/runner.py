"""The bench runner: one unit = one (model, workload) pair and its rows, measured in one process.

Protocol, per unit: load the target (and draft) once; build the workload's prompt ids once;
warm up every row on the first prompt; then, for each repeat, for each prompt, run every row in
turn, so that drift on a shared machine hits every row alike. Each generation is timed whole with
time.perf_counter (CUDA is synchronised first), and its process CPU time is recorded too (a
figure that waiting for a busy machine's cores does not inflate); methods only count. With ignore_eos (the
default) every row generates exactly max_new_tokens per prompt: the same work for every row, and
the peers run with eos_token_id=None to match. Quality (perplexity or task accuracy) is measured
after the timing, from the first repeat's outputs; perplexity teacher-forces the output through the
target adapter (one forward, the raw distribution: temperature 1, no filters). Methods that return
several sequences per prompt (beam, diverse_beam, superposed) also keep them all, from the first
repeat, for diversity across them (`sequences`). A KeyboardInterrupt stops the unit and returns
what was measured, marked partial.

Methods that learn across generations (Token Recycling, ADED) get their memory only from the
`State` passed in: every row gets a new State per repeat, carried over the prompts in order, as a
serving session would; the warm-up uses a throwaway one. So no timed generation profits from
having seen its own prompt (in the warm-up, in an earlier repeat or in another row).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

import torch

from .. import rewards
from ..errors import DecodeLabError
from ..loops.common import token_logprobs
from ..state import State
from . import engines, peers, workloads
from .rows import DIFFUSION_REFERENCE, LLAMACPP_GREEDY, REFERENCES, Row, method_kwargs, parse_row


@dataclass(frozen=True)
class Settings:
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    limit: int | None = None
    max_new_tokens: int | None = None  # None: the workload's own
    ignore_eos: bool = True
    device: str = "cpu"
    threads: int | None = None  # torch.set_num_threads for the unit; None: torch's default

    def __post_init__(self):
        if self.repeats < 1 or self.warmup < 0:
            raise DecodeLabError(f"repeats must be >= 1 and warmup >= 0, got {self.repeats} and {self.warmup}")


@dataclass(frozen=True)
class Unit:
    """What one process (or one Ray task) measures. `main` names the rows whose figures this unit
    reports; the other rows are the references it measures alongside, for in-unit ratios."""

    uid: int
    model: str
    draft: str | None
    workload: str
    rows: tuple[Row, ...]
    main: tuple[str, ...]
    settings: Settings = field(default_factory=Settings)
    reference: str = "greedy"  # speedups are ratios to this row: greedy, or llada for diffusion models

    def to_dict(self) -> dict:
        return {"uid": self.uid, "model": self.model, "draft": self.draft, "workload": self.workload,
                "rows": [r.to_dict() for r in self.rows], "main": list(self.main),
                "settings": dataclasses.asdict(self.settings), "reference": self.reference}

    @classmethod
    def from_dict(cls, d: dict) -> "Unit":
        return cls(d["uid"], d["model"], d["draft"], d["workload"], tuple(Row.from_dict(r) for r in d["rows"]),
                   tuple(d["main"]), Settings(**d["settings"]), d.get("reference", "greedy"))


def with_references(rows: list[Row], peers_on: bool, diffusion: bool = False) -> list[Row]:
    """The baselines first, then the other rows in order: our greedy and transformers greedy; on a
    diffusion model the one-token-per-step llada, then llada at the steps and blocks of each
    lossless row (the output that row must equal)."""
    given = {r.label: r for r in rows}
    if diffusion:
        labels = [DIFFUSION_REFERENCE] + sorted({r.reference() for r in rows} - {DIFFUSION_REFERENCE})
        refs = [given.get(lb) or parse_row(lb) for lb in labels]
    else:
        names = [m for m in REFERENCES if peers_on or m == "greedy" or m in given]
        names += [m for m in (LLAMACPP_GREEDY, "llamacpp:greedy")  # what rows on / of llama.cpp compare with
                  if any(r.exact_ref() == m for r in rows)]
        refs = [given.get(m) or parse_row(m) for m in names]
    return refs + [r for r in rows if r.label not in {x.label for x in refs}]



def run_unit(unit: Unit, progress=None) -> dict:
    """Measure a unit; returns a JSON-ready dict with every raw timing, count and output."""
    from .. import api

    s = unit.settings
    if s.threads:
        torch.set_num_threads(s.threads)
    target = api.load(unit.model, device=s.device)
    draft = api.load(unit.draft, device=s.device) if unit.draft else None
    for r in unit.rows:
        if r.needs_draft and draft is None:
            raise DecodeLabError(f"row '{r.label}' needs a draft model (--draft) for model {unit.model}")
    models = _Models(unit, target, draft)
    wl = workloads.build(unit.workload, target, limit=s.limit, max_new_tokens=s.max_new_tokens, seed=s.seed)
    result = {"unit": unit.to_dict(), "prompts": [list(p) for p in wl.prompts], "max_new_tokens": wl.max_new_tokens,
              "quality_kind": wl.quality, "truncated_prompts": wl.truncated, "records": [], "outputs": {},
              "errors": {}, "unstable": {}, "quality": {}, "partial": False, "load_rss_mb": _rss_mb(),
              "torch_threads": torch.get_num_threads(), "tasks": [ex.task for ex in wl.examples]}
    outputs: dict[str, dict[int, list[int]]] = {r.label: {} for r in unit.rows}
    sequences: dict[str, dict[int, list[list[int]]]] = {}  # several-output rows: every sequence per prompt
    if progress is not None:
        progress.total = (progress.total or 0) + total_steps(unit, len(wl.prompts))
        progress.refresh()
    memory = _PeakMemory(target.device)
    try:
        for r in unit.rows:
            for _ in range(s.warmup):
                _guarded(result, r, lambda: _generate(r, models, wl.prompts[0], 0, wl, s, State()))
                _tick(progress)
        with memory:
            for rep in range(s.repeats):
                states = {r.label: State() for r in unit.rows}  # each row's own, cold every repeat
                for i, prompt in enumerate(wl.prompts):
                    for r in unit.rows:
                        if r.label not in result["errors"]:
                            rec = _guarded(result, r, lambda: _timed(r, models, prompt, i, wl, s, memory,
                                                                     states[r.label]))
                            if rec is not None:
                                tokens, seqs = rec.pop("tokens"), rec.pop("sequences", None)
                                rec.update(row=r.label, prompt=i, repeat=rep)
                                result["records"].append(rec)
                                if seqs is not None and rep == 0:  # a several-output method: all of them
                                    sequences.setdefault(r.label, {})[i] = seqs
                                if outputs[r.label].setdefault(i, tokens) != tokens:  # a repeat changed it
                                    result["unstable"][r.label] = result["unstable"].get(r.label, 0) + 1
                        _tick(progress)
    except KeyboardInterrupt:
        result["partial"] = True
    result["outputs"] = {label: [outs[i] for i in sorted(outs)] for label, outs in outputs.items()}
    result["sequences"] = {label: [seqs[i] for i in sorted(seqs)] for label, seqs in sequences.items()}
    if not result["partial"]:
        try:
            ref = result["outputs"].get(unit.reference)
            result["quality"] = {label: _quality(target, wl, result["prompts"], outs, ref)
                                 for label, outs in result["outputs"].items()}
        except KeyboardInterrupt:
            result["partial"] = True
    return result


class _Models:
    """A unit's models: the target and draft loaded once on torch, their llama.cpp adapters (the
    same weights as f32 GGUF) on first use by a row with backend=llamacpp, and the engines of the
    llama.cpp and CTranslate2 peer rows."""

    def __init__(self, unit: Unit, target, draft):
        self.unit, self.target, self.draft = unit, target, draft
        self.engines = engines.Engines(unit.model, target, unit.settings.threads)
        self._llamacpp = None

    def on(self, backend: str):
        """(target, draft) adapters for a backend."""
        if backend == "torch" or getattr(self.target, "weights", None) is not None:  # already a GGUF
            return self.target, self.draft
        if self._llamacpp is None:
            from .. import api

            self._llamacpp = (api.load(self.unit.model, backend="llamacpp"),
                              api.load(self.unit.draft, backend="llamacpp") if self.unit.draft else None)
        return self._llamacpp


def total_steps(unit: Unit, n_prompts: int) -> int:
    return len(unit.rows) * (unit.settings.warmup + unit.settings.repeats * n_prompts)


def _tick(progress) -> None:
    if progress is not None:
        progress.update(1)


def _guarded(result, row: Row, fn):
    """A row that raises becomes a failure row with its message; the run goes on."""
    try:
        return fn()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001  (any failure of one row must not lose the others)
        result["errors"][row.label] = f"{type(e).__name__}: {e}"
        return None


def _generate(row: Row, models: "_Models", prompt, index: int, wl, s: Settings, state: State) -> tuple[list[int], dict]:
    if row.method.startswith("hf:"):
        return peers.generate(row, models.target, models.draft, list(prompt), wl.max_new_tokens, s.ignore_eos)
    if row.peer:
        return engines.generate(row, models.engines, list(prompt), wl.max_new_tokens, s.ignore_eos)
    target, draft = models.on(row.backend)
    from .. import api
    from ..registry import get

    spec = get(row.method)
    kw = method_kwargs(spec, row.kwargs)
    if kw.get("reward") == "task":  # the workload's own checker (the step checker, a constraint)
        if wl.checker is None:
            raise DecodeLabError(f"workload '{wl.name}' has no checker for reward=task")
        kw["reward"] = wl.checker
    if row.sampling:
        kw.setdefault("seed", s.seed + index)  # one seed per prompt: every repeat draws the same
    out = api.generate(target, list(prompt), row.method, draft=draft if spec.draft else None,
                       max_new_tokens=wl.max_new_tokens, ignore_eos=s.ignore_eos, state=state, **kw)
    st = out.stats
    more = {} if out.sequences is None else {"sequences": out.sequences}
    return out.tokens, {**more, "new_tokens": st.new_tokens, "prompt_tokens": st.prompt_tokens,
                        "target_forwards": st.target_forwards, "target_tokens_scored": st.target_tokens_scored,
                        "draft_forwards": st.draft_forwards, "draft_tokens_scored": st.draft_tokens_scored,
                        "committed_total": sum(st.committed), "committed_steps": len(st.committed),
                        "unmasked_total": sum(st.unmasked), "forwarded_tokens": st.forwarded_tokens,
                        "target_emitted": st.target_emitted}


def _timed(row, models, prompt, index, wl, s, memory, state) -> dict:
    memory.reset()
    _sync(models.target.device)
    c0, t0 = time.process_time(), time.perf_counter()
    tokens, counts = _generate(row, models, prompt, index, wl, s, state)
    _sync(models.target.device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mem_mb": memory.peak(), "tokens": tokens, **counts}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def _quality(target, wl, prompts, outputs: list[list[int]], reference=None) -> list[float | None]:
    """Per prompt: task correctness (1.0 / 0.0), whether the workload's checker is satisfied (1.0 /
    0.0), the generated tokens' mean NLL under the target (perplexity = exp of the mean over
    prompts, token-weighted), or (agreement) the share of positions equal to the reference row's
    output."""
    eos = set(target.eos_token_ids)
    scores = []
    checker = rewards.parse(wl.checker) if wl.quality == "satisfied" else None
    for i, out in enumerate(outputs):
        if checker is not None:
            cut = next((j for j, t in enumerate(out) if t in eos), len(out))
            prompt, (text,) = rewards.texts(target, prompts[i], [out[:cut]])
            scores.append(float(checker.score(prompt, text, True) >= 1.0))
            continue
        if wl.quality == "agreement":
            ref = reference[i] if reference is not None and i < len(reference) else None
            n = max(len(out), len(ref)) if ref is not None else 0
            scores.append(sum(a == b for a, b in zip(out, ref)) / n if n else None)
        elif wl.quality == "accuracy":
            cut = next((j for j, t in enumerate(out) if t in eos), len(out))
            text = target.tokenizer.decode(out[:cut])
            from ..zoo import tasks

            scores.append(float(tasks.score(wl.examples[i], text)))
        elif not out:
            scores.append(None)
        else:
            scores.append(-sum(target_logprobs(target, prompts[i], out)))
    return scores


def target_logprobs(target, prompt: list[int], out: list[int]) -> list[float]:
    """log p of each of `out`'s tokens under the target's raw distribution after `prompt`,
    teacher-forced in one forward through the adapter (any CausalLM: a transformers model, ToyLM)."""
    target.reset()
    ids = torch.tensor(prompt + out)  # [T + n]
    logits = target.forward(ids, torch.arange(len(ids))).logits[len(prompt) - 1:-1]  # [n, V]
    target.reset()
    return token_logprobs(logits, out)


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return None


try:
    import os

    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # not POSIX
    _PAGE = 4096


class _PeakMemory:
    """Peak memory during each generation: CUDA max_memory_allocated on a GPU; on Linux the kernel's
    own peak RSS (VmHWM, reset per generation through /proc/self/clear_refs), exact and free; else
    the RSS sampled every 5 ms by a background thread (a thread that, waking 200 times a second,
    takes the GIL from Python-heavy rows more than from rows that wait in C, so it is the last
    resort; tracemalloc would slow the timed code and does not see torch's allocations)."""

    def __init__(self, device, interval: float = 0.005):
        self.cuda = torch.device(device).type == "cuda"
        self.device, self.interval = device, interval
        self._peak, self._stop = 0.0, threading.Event()
        self._thread = None
        self.kernel = not self.cuda and _reset_hwm() and _hwm_mb() is not None

    def __enter__(self):
        if not self.cuda and not self.kernel and _rss_mb() is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll(self):
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_mb() or 0.0)

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kernel:
            _reset_hwm()
        self._peak = _rss_mb() or 0.0

    def peak(self) -> float | None:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.kernel:
            return _hwm_mb()
        rss = _rss_mb()
        return None if rss is None else max(self._peak, rss)


def _reset_hwm() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mb() -> float | None:
    """The process's peak RSS since the last reset (VmHWM), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
