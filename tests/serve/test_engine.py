"""The engine and the text stream without HTTP: admission, sessions, shutdown, stop strings."""
from __future__ import annotations

import asyncio

import pytest

from decodelab.errors import DecodeLabError
from decodelab.serve import Engine, Job, Limits, ServeError
from decodelab.serve.text import TextStream


class _Tok:
    """A character-level tokenizer: token i is chr(i)."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(map(chr, ids))


def test_text_stream_holds_back_a_possible_stop_string_and_cuts_before_it():
    ts = TextStream(_Tok(), stops=["END"])
    assert ts.feed([ord(c) for c in "ab"]) == "ab"
    assert ts.feed([ord("E")]) == ""  # may be the start of END
    assert ts.feed([ord("x")]) == "Ex"  # it was not
    assert ts.feed([ord(c) for c in "yEN"]) == "y"
    assert ts.feed([ord("D")]) == "" and ts.stopped
    assert ts.finish() == "" and ts.sent == "abExy"


def test_text_stream_holds_back_a_split_character():
    ts = TextStream(_Tok())
    assert ts.feed([ord("a"), 0xFFFD]) == "a"
    assert ts.finish() == "\ufffd"


@pytest.mark.parametrize("kw", [{"max_tokens": 0}, {"max_concurrent": -1}, {"request_timeout": 0},
                                {"max_queue": 1.5 - 2}, {"max_tokens": True}])
def test_limits_refuse_non_positive_values(kw):
    with pytest.raises(DecodeLabError, match="must be a positive number"):
        Limits(**kw)


def test_sessions_shutdown_and_capacity(tiny_dirs):
    import decodelab

    engine = Engine(decodelab.load(tiny_dirs["llama"][0]), limits=Limits(max_concurrent=1, max_queue=1,
                                                                         max_sessions=2))

    async def scenario():
        job = lambda session=None: Job(method="greedy", max_new_tokens=4, prompt=[1, 2, 3], session=session)  # noqa: E731
        a = engine.start(job("s1"))
        with pytest.raises(ServeError) as busy:
            engine.start(job("s1"))
        assert busy.value.status == 409
        b = engine.start(job())
        with pytest.raises(ServeError) as full:
            engine.start(job())
        assert full.value.status == 429
        for gen in (a, b):
            while True:
                ev = await gen.next()
                if type(ev).__name__ in ("Done", "Failed"):
                    assert type(ev).__name__ == "Done"
                    break
        await asyncio.sleep(0.05)  # the workers' slots are handed back on the loop
        assert engine.active == 0
        for s in ("s2", "s3", "s4"):  # at most 2 sessions kept, least recently used dropped
            gen = engine.start(job(s))
            while type(await gen.next()).__name__ != "Done":
                pass
            await asyncio.sleep(0.05)
        assert list(engine._sessions) == ["s3", "s4"]
        engine.begin_shutdown()
        with pytest.raises(ServeError) as closing:
            engine.start(job())
        assert closing.value.status == 503

    asyncio.run(scenario())
    engine.close()
