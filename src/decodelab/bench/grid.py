"""The method x workload x model grid: planned as units, run in-process or as Ray tasks, merged.

In-process, one unit per (model, workload) measures every row, so all of a cell's ratios come
from one pass. With Ray, each non-reference row gets a unit of its own that also measures the
references (our greedy, transformers greedy) and its transformers counterpart (sps:
hf:assisted), and each cell gets one unit for the references themselves: every speedup is
still a ratio inside one task on one machine. Both paths run the same `run_unit`, and both
merge into the same results dict; only the timings differ.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import sys
from typing import Callable, Iterable

from ..errors import DecodeLabError
from . import metrics, workloads
from .rows import REFERENCES, Row
from .runner import Settings, Unit, run_unit, with_references

SCHEMA = 1


def cells_for(models: list[tuple], names: list[str], diffusion: bool = False) -> list[tuple[str, str | None, str]]:
    """(model, draft, workload) cells: every model x every workload; a model given as (target,
    draft, workloads) gets its own workloads instead. With no model given, each workload's default
    zoo model(s) (the masked diffusion ones when `diffusion`: every row is a diffusion method)."""
    for n in names:
        workloads.family(n)  # unknown workload -> DecodeLabError, before anything loads
    cells = []
    for m in models:
        own = m[2] if len(m) > 2 and m[2] else names
        for w in own:
            workloads.family(w)
        cells += [(m[0], m[1], w) for w in own]
    if not models:
        cells = [(*workloads.default_model(w, diffusion), w) for w in names]
    for src in {s for m, d, _ in cells for s in (m, d) if s}:
        check_model(src)
    return cells


def is_diffusion_model(src: str) -> bool:
    """Whether `src` (zoo:NAME or a model directory) is a masked diffusion LM, read from its
    config.json without loading weights (hub names: False, they load as causal LMs or fail)."""
    import json
    from pathlib import Path

    from ..models.hf_diffusion import is_masked_diffusion

    if src.startswith("zoo:"):
        from .. import zoo

        path = zoo.resolve(src[4:])
    else:
        path = Path(src).expanduser()
    try:
        return is_masked_diffusion(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError):
        return False


def check_model(src: str) -> None:
    """Refuse a missing zoo checkpoint or a directory that is not a model before anything runs
    (loading happens later, per unit); hub names pass through to load()."""
    from pathlib import Path

    if src.startswith("zoo:"):
        from .. import zoo

        zoo.resolve(src[4:])
    elif Path(src).expanduser().exists() and not (Path(src).expanduser() / "config.json").is_file():
        raise DecodeLabError(f"'{src}' is not a model directory (no config.json)")


def plan(cells, rows: list[Row], settings: Settings, peers_on: bool = True, split: bool = False,
         strict: bool = True, extra: dict[str, dict] | None = None) -> list[Unit]:
    """Units for the cells. strict: a row that needs a draft in a cell without one is an error
    (rows the user named); otherwise it is left out of that cell (default rows). A row runs only
    on models of its family: diffusion methods on masked diffusion LMs, the others on causal LMs;
    a diffusion cell's baseline is the one-token-per-step llada, and it has no transformers
    peers. extra: model -> {"rows": rows for that model only, "limit": its prompt count} (a suite
    file's per-model methods and limit)."""
    units: list[Unit] = []
    for model, draft, wl in cells:
        diffusion = is_diffusion_model(model)
        own = (extra or {}).get(model, {})
        pool = rows + [r for r in own.get("rows", []) if r.label not in {x.label for x in rows}]
        if own.get("limit") is not None:
            settings_cell = dataclasses.replace(settings, limit=own["limit"])
        else:
            settings_cell = settings
        pool = [r for r in pool if r.diffusion == diffusion]
        if diffusion:
            units += _diffusion_units(len(units), model, wl, pool, settings_cell, split)
            continue
        cell_rows = [r for r in pool if draft is not None or not r.needs_draft]
        skipped = [r.label for r in pool if r not in cell_rows]
        if skipped and strict:
            raise DecodeLabError(f"row(s) {', '.join(skipped)} need a draft model and {model} has none (--draft)")
        labels = {r.label for r in cell_rows}  # the peers at transformers' defaults, besides any variants given
        if peers_on and draft is not None and "hf:assisted" not in labels:
            cell_rows.append(Row("hf:assisted", "hf:assisted"))
        if peers_on and "hf:prompt-lookup" not in labels:
            cell_rows.append(Row("hf:prompt-lookup", "hf:prompt-lookup"))
        all_rows = with_references(cell_rows, peers_on)
        refs = [r for r in all_rows if r.label in REFERENCES]
        if not split:
            labels = tuple(r.label for r in all_rows)
            units.append(Unit(len(units), model, draft, wl, tuple(all_rows), labels, settings_cell))
            continue
        units.append(Unit(len(units), model, draft, wl, tuple(refs), tuple(r.label for r in refs), settings_cell))
        by_label = {r.label: r for r in all_rows}
        for r in all_rows:
            if r.label not in REFERENCES:
                peer = metrics.peer_label(r, set(by_label))  # its transformers counterpart runs alongside
                companion = (by_label[peer],) if peer and peer not in REFERENCES else ()
                units.append(Unit(len(units), model, draft, wl, tuple(refs) + companion + (r,), (r.label,),
                                  settings_cell))
    return units


def _diffusion_units(uid: int, model: str, wl: str, rows: list[Row], settings: Settings,
                     split: bool) -> list[Unit]:
    """A diffusion cell: the llada references first; split: one unit per row, each with the
    one-token-per-step reference and the reference it must equal."""
    all_rows = with_references(rows, peers_on=False, diffusion=True)
    if not split:
        return [Unit(uid, model, None, wl, tuple(all_rows), tuple(r.label for r in all_rows), settings, "llada")]
    by_label = {r.label: r for r in all_rows}
    units = [Unit(uid, model, None, wl, (by_label["llada"],), ("llada",), settings, "llada")]
    for r in all_rows:
        if r.label != "llada":
            refs = [by_label["llada"]] + ([by_label[r.reference()]] if r.reference() not in ("llada", r.label) else [])
            units.append(Unit(uid + len(units), model, None, wl, tuple(refs) + (r,), (r.label,), settings, "llada"))
    return units


def run_local(units: list[Unit], progress: bool = True) -> tuple[list[dict], bool]:
    """Run the units one after the other in this process, with a progress bar."""
    from tqdm.auto import tqdm

    results = []
    bar = tqdm(total=None, unit="gen", desc="bench", disable=not progress, dynamic_ncols=True)
    try:
        for u in units:
            bar.set_description(f"bench {u.workload}")
            res = run_unit(u, progress=bar)
            results.append(res)
            if res["partial"]:
                return results, True
    except KeyboardInterrupt:
        return results, True
    finally:
        bar.close()
    return results, False


def run_ray(units: list[Unit], address: str, progress: bool = True,
            cpus_per_task: float = 1) -> tuple[list[dict], bool]:
    """Run each unit as a Ray task (`address` "local" starts a local instance) and gather them."""
    try:
        import ray
    except ImportError:
        raise DecodeLabError("--ray needs Ray: pip install 'ray>=2.9'") from None
    from tqdm.auto import tqdm

    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, **({"num_cpus": os.cpu_count()} if address == "local" else {}))
    task = ray.remote(num_cpus=cpus_per_task)(_run_unit_dict)
    pending = {task.remote(u.to_dict()): u.uid for u in units}
    done: dict[int, dict] = {}
    partial = False
    bar = tqdm(total=len(units), unit="task", desc="bench (ray)", disable=not progress)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                done[pending.pop(ref)] = ray.get(ref)
                bar.update(1)
    except KeyboardInterrupt:
        partial = True
        for ref in pending:
            ray.cancel(ref, force=True)
    finally:
        bar.close()
        if started:
            ray.shutdown()
    results = [done[uid] for uid in sorted(done)]
    return results, partial or any(r["partial"] for r in results)


def _run_unit_dict(d: dict) -> dict:
    import decodelab  # noqa: F401  (registers the built-in methods in the worker)

    return run_unit(Unit.from_dict(d))


def merge(results: list[dict], settings: Settings, partial: bool, executor: str, peers_on: bool) -> dict:
    """The results document: machine, versions, settings, raw unit results and row summaries."""
    import dataclasses

    return {"schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "settings": {**dataclasses.asdict(settings), "peers": peers_on, "executor": executor},
            "partial": partial or any(r["partial"] for r in results),
            "rows": metrics.summarize(results), "units": results}


def machine() -> dict:
    import torch
    import transformers

    import decodelab

    info = {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
            "processor": _cpu_name(), "torch": torch.__version__, "transformers": transformers.__version__,
            "decodelab": decodelab.__version__, "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(cells, rows: list[Row], settings: Settings, *, peers_on: bool = True, ray: str | None = None,
        progress: bool = True, strict: bool = True, extra: dict[str, dict] | None = None,
        executor: Callable[[Iterable[Unit]], list[dict]] | None = None) -> dict:
    """Plan, run and merge a bench; returns the results document. `executor` (tests): any
    map-like function over the split units, in place of Ray. extra: see plan()."""
    units = plan(cells, rows, settings, peers_on, split=ray is not None or executor is not None, strict=strict,
                 extra=extra)
    if executor is not None:  # tests: any map-like function over units
        results, partial, name = list(executor(units)), False, "custom"
    elif ray is not None:
        (results, partial), name = run_ray(units, ray, progress), f"ray:{ray}"
    else:
        (results, partial), name = run_local(units, progress), "in-process"
    return merge(results, settings, partial, name, peers_on)
