"""The bench for search methods: task workloads larger than 50 problems whose prompts are never
cut, the constraints workloads, reward=task (the workload's own checker), the "satisfied" quality,
and the quality-against-compute table and plot."""
import pytest

import decodelab
from decodelab import rewards
from decodelab.bench import Settings, grid, parse_row, report, workloads


def test_task_workloads_grow_past_50_and_keep_their_prompts_whole(tok_model_dir):
    model = decodelab.load(tok_model_dir)
    default = workloads.build("tasks:arithmetic", model)
    more = workloads.build("tasks:arithmetic", model, limit=120)
    assert len(default.prompts) == 50 and len(more.prompts) == 120 and more.prompts[:50] == default.prompts
    assert more.checker == "arithmetic" and more.quality == "accuracy"
    ar = decodelab.load("zoo:tasks-ar")  # a 64-token context: 17-token prompts + 48 new tokens would not fit
    wl = workloads.build("tasks:arithmetic", ar)
    assert wl.truncated == 0 and wl.max_new_tokens == 64 - max(len(p) for p in wl.prompts) < 48
    assert workloads.build("tasks:arithmetic", ar, max_new_tokens=48).truncated > 0  # asked for: cut, as before
    assert workloads.build("tasks:copy", model).checker is None


def test_constraints_workloads(tok_model_dir):
    model = decodelab.load(tok_model_dir)
    plain = workloads.build("constraints", model, limit=3)
    told = workloads.build("constraints:prompted", model, limit=3)
    assert len(plain.prompts) == 3 and plain.max_new_tokens == 32 and plain.quality == "satisfied"
    assert plain.checker == told.checker == workloads.CONSTRAINT
    for a, b in zip(plain.prompts, told.prompts):
        assert model.tokenizer.decode(b).endswith(workloads.INSTRUCTION)
        assert not model.tokenizer.decode(a).endswith(workloads.INSTRUCTION)
    assert len(workloads.build("constraints", model).prompts) == 40


def test_reward_task_and_the_satisfied_quality(tok_model_dir, tmp_path):
    rows = [parse_row("greedy"), parse_row("best_of_n:n=3,reward=task"), parse_row("astar:reward=task,k=2")]
    settings = Settings(repeats=1, warmup=0, limit=3, max_new_tokens=12, threads=1)
    res = grid.run(grid.cells_for([(tok_model_dir, None)], ["constraints"]), rows, settings, peers_on=False,
                   progress=False)
    assert all(r["status"] == "ok" for r in res["rows"]), [(r["row"], r["status"], r["error"]) for r in res["rows"]]
    unit = res["units"][0]
    checker = rewards.parse(workloads.CONSTRAINT)
    tok = decodelab.load(tok_model_dir).tokenizer
    for label, outs in unit["outputs"].items():  # satisfied = the checker's score is 1 on the output
        want = [float(checker.score("", tok.decode(o, skip_special_tokens=True), True) >= 1.0) for o in outs]
        assert unit["quality"][label] == want
    md = report.markdown(res)
    assert "## Quality against compute: constraints on" in md and "| astar:k=2,reward=task | sat " in md
    assert "compute.png" in [p.name for p in report.render(res, tmp_path)]
    # a workload without a checker: reward=task is a failure row, the others run
    res = grid.run(grid.cells_for([(tok_model_dir, None)], ["tasks:copy"]), rows[:2], settings, peers_on=False,
                   progress=False)
    assert "no checker for reward=task" in next(r for r in res["rows"] if r["row"] != "greedy")["error"]


def test_reward_task_outside_the_bench_is_refused(tok_model_dir):
    with pytest.raises(decodelab.DecodeLabError, match="bench"):
        decodelab.generate(decodelab.load(tok_model_dir), "def f():", "best_of_n", reward="task", max_new_tokens=4)
