import pytest

from decodelab.errors import DecodeLabError
from decodelab.zoo import tasks as T


def ex(task, items, **meta):
    return T.Example("p", "t", task, {"items": items, **meta})


def test_examples_deterministic_and_self_consistent():
    for task in T.TASKS:
        a = T.examples(task, "train", 30, seed=5)
        assert a == T.examples(task, "train", 30, seed=5)
        assert a != T.examples(task, "train", 30, seed=6)
        for e in a + T.examples(task, "test", 30, seed=5):
            assert e.task == task
            assert e.target.startswith(" ") and e.target.endswith("\n")
            assert T.score(e, e.target), (task, e)


def test_train_and_test_splits_are_disjoint():
    for task in ("copy", "sort", "arithmetic"):
        train = {e.prompt for e in T.examples(task, "train", 300, 0)}
        test = {e.prompt for e in T.examples(task, "test", 100, 0)}
        assert not train & test
        assert all(T.split_of(p) == "test" for p in test)


def test_list_formats():
    e = T.examples("reverse", "test", 1, 0)[0]
    items = e.meta["items"]
    assert e.prompt == f"reverse: {', '.join(items)} =>"
    assert e.target == f" {', '.join(reversed(items))}\n"
    assert 3 <= len(items) <= 6 and len(set(items)) == len(items)
    assert set(items) <= set(T.NAMES)


def test_exact_match_scorers():
    e = ex("sort", ["Cid", "Ann", "Bob"], answer=["Ann", "Bob", "Cid"])
    assert T.score(e, " Ann, Bob, Cid\n")
    assert T.score(e, " Ann, Bob, Cid")  # end of text without newline
    assert T.score(e, " Ann, Bob, Cid\nrubbish after the line")
    assert not T.score(e, " Ann, Cid, Bob\n")
    assert not T.score(e, " Ann, Bob\n")
    assert not T.score(e, "")


def test_shuffle_scorer():
    e = ex("shuffle", ["Ann", "Bob", "Cid"], answer=["Bob", "Ann", "Cid"])
    assert T.score(e, " Cid, Ann, Bob\n")  # any other order
    assert not T.score(e, " Ann, Bob, Cid\n")  # the input order is not a shuffle
    assert not T.score(e, " Ann, Bob, Dan\n")  # different multiset
    assert not T.score(e, " Ann, Ann, Bob\n")
    assert not T.score(e, " Bob, Ann\n")


def test_random_edit_scorers():
    ins = ex("insert_random", ["Ann", "Bob", "Cid"], name="Dan")
    assert T.score(ins, " Dan, Ann, Bob, Cid\n") and T.score(ins, " Ann, Bob, Cid, Dan\n")
    assert not T.score(ins, " Ann, Dan, Cid, Bob\n")  # order changed
    assert not T.score(ins, " Ann, Eve, Bob, Cid\n")  # wrong name
    assert not T.score(ins, " Ann, Bob, Cid\n")
    rem = ex("remove_random", ["Ann", "Bob", "Cid"])
    assert T.score(rem, " Ann, Cid\n") and T.score(rem, " Bob, Cid\n")
    assert not T.score(rem, " Cid, Ann\n") and not T.score(rem, " Ann, Bob, Cid\n") and not T.score(rem, " Ann\n")
    rep = ex("replace_random", ["Ann", "Bob", "Cid"], name="Dan")
    assert T.score(rep, " Ann, Dan, Cid\n") and T.score(rep, " Dan, Bob, Cid\n")
    assert not T.score(rep, " Dan, Dan, Cid\n")  # two changed
    assert not T.score(rep, " Ann, Eve, Cid\n")  # wrong name
    assert not T.score(rep, " Ann, Bob, Cid\n")  # nothing replaced


def test_arithmetic_scorer_checks_the_final_answer():
    e = T.Example("calc: 23+45-12 =>", " 23+45=68, 68-12=56, answer 56\n", "arithmetic", {"answer": 56})
    assert T.score(e, e.target)
    assert T.score(e, " 23+45=60, 60-12=56, answer 56\n")  # only the final answer counts
    assert not T.score(e, " 23+45=68, 68-12=56, answer 57\n")
    assert not T.score(e, " 23+45=68, 68-12=56\n")
    e2 = T.examples("arithmetic", "test", 1, 0)[0]
    assert e2.target.endswith(f", answer {e2.meta['answer']}\n") and e2.target.count("=") in (2, 3)


def test_unknown_task_and_split():
    with pytest.raises(DecodeLabError, match="unknown task"):
        T.examples("juggle", "test", 1)
    with pytest.raises(DecodeLabError, match="split"):
        T.examples("copy", "dev", 1)
