"""The report's answer line: the fastest rows that keep our greedy's output on every prompt (through
their chain of exact-match references), and the fastest that do not, with its quality."""
from decodelab.bench import report


def _row(name, speed, ref="greedy", rate=1.0, claims=True, quality=None, status="ok", llama=None):
    return {"row": name, "status": status, "claims_greedy_equality": claims, "exact_match_ref": ref,
            "exact_match": None if rate is None else {"rate": rate}, "quality": quality, "quality_delta": 0.5,
            "quality_kind": "perplexity",
            "speedup_vs_greedy": {"median": speed, "q25": speed - 0.1, "q75": speed + 0.1, "min": speed - 0.3},
            "speedup_vs_llamacpp_greedy": None if llama is None else {"median": llama, "min": llama - 0.2}}


def test_the_answer_names_the_fastest_rows_that_keep_greedys_output_and_the_fastest_that_do_not():
    rows = [_row("greedy", 1.0, ref=None, rate=None),
            _row("pld", 1.5),
            _row("samd:backend=llamacpp", 1.7, ref="greedy:backend=llamacpp", llama=1.1),
            _row("greedy:backend=llamacpp", 1.6),
            _row("on_a_wrong_ref", 3.0, ref="drifted"),  # exact against a row that is not greedy's output
            _row("drifted", 2.9, rate=0.5, status="FAIL: output differs from greedy"),
            _row("sample", 2.0, rate=None, claims=False, quality=3.2),
            _row("lossy", 2.5, rate=0.0, claims=False, quality=4.0),
            _row("crashed", 9.0, status="FAIL: boom")]
    (line,) = report.answer(rows)
    assert line == ("**Fastest here** with our greedy's output on every prompt: `samd:backend=llamacpp` at 1.70x our "
                    "greedy (IQR 1.60-1.80; 1.10x llama.cpp's greedy, 0.90x on its slowest prompt), then "
                    "`greedy:backend=llamacpp` at 1.60x our greedy. With another output: `lossy` at 2.50x our greedy "
                    "(IQR 2.40-2.60; 2.20x on its slowest prompt), ppl 4.000 (+0.500).")


def test_greedy_itself_can_be_the_answer_and_a_cell_without_speeds_has_none():
    rows = [_row("greedy", 1.0, ref=None, rate=None), _row("sps", 0.8)]
    assert report.answer(rows) == ["**Fastest here** with our greedy's output on every prompt: `greedy` at 1.00x "
                                   "our greedy (IQR 0.90-1.10), then `sps` at 0.80x our greedy."]
    assert report.answer([{"row": "x", "status": "FAIL: boom", "speedup_vs_greedy": None}]) == []


def test_a_row_from_a_run_that_kept_no_extremes_is_named_without_its_slowest_prompt():
    row = _row("pld", 1.5, llama=1.2)
    del row["speedup_vs_greedy"]["min"], row["speedup_vs_llamacpp_greedy"]["min"]
    assert report.answer([_row("greedy", 1.0, ref=None, rate=None), row])[0] == (
        "**Fastest here** with our greedy's output on every prompt: `pld` at 1.50x our greedy (IQR 1.40-1.60; "
        "1.20x llama.cpp's greedy), then `greedy` at 1.00x our greedy.")
