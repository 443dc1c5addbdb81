"""Fixtures: the zoo code pair, and a decodelab server for it on a free loopback port."""
from __future__ import annotations

import pytest

import decodelab
from serve.serve_helpers import CHAT_TEMPLATE, openai_client, start


@pytest.fixture(scope="session")
def zoo_models():
    target, draft = decodelab.load("zoo:code-target"), decodelab.load("zoo:code-draft")
    target.tokenizer.chat_template = CHAT_TEMPLATE
    return target, draft


@pytest.fixture(scope="module")
def server(zoo_models):
    """(base url, target, draft): the zoo code pair served with default limits but a short max_tokens."""
    bg = start(*zoo_models, max_tokens=256, max_prompt_tokens=512)
    yield bg.url, *zoo_models
    bg.stop()


@pytest.fixture
def client(server):
    return openai_client(server[0])
