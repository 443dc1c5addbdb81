"""The search methods' reward option: a spec string, a Reward or a callable from Python, checked when
the config is built; and from the command line."""
import pytest

from decodelab import DecodeLabError
from decodelab.rewards import Arithmetic, Keywords


def test_method_configs_take_specs_reward_objects_and_callables():
    from decodelab.methods.astar import AStarConfig
    from decodelab.methods.deal import DeALConfig

    assert DeALConfig(reward="keywords:a").reward == "keywords:a"
    k, f = Keywords(["a"]), (lambda p, t: 1.0)
    assert DeALConfig(reward=k).reward is k and DeALConfig(reward=f).reward is f
    for bad in (3, ["keywords:a"], "nope", "length:1", True):
        with pytest.raises(DecodeLabError):
            DeALConfig(reward=bad)
    with pytest.raises(DecodeLabError, match="process reward"):
        AStarConfig()


def test_rewards_from_the_command_line(capsys):
    import json

    from decodelab.cli import main

    argv = ["generate", "calc: 10+56-25 =>", "--model", "zoo:tasks-ar", "--method", "astar", "--reward", "arithmetic",
            "--seed", "0", "--max-new-tokens", "46", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert Arithmetic().score("calc: 10+56-25 =>", out["text"], True) == 1.0  # greedy writes 10+56=56
    assert main(argv[:-1] + ["--method", "deal", "--reward", "keywords:"]) == 2
    assert "give at least one word" in capsys.readouterr().err
