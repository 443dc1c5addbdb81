"""Start decodelab servers for tests: in a thread of the test process (Background), on a free
loopback port."""
from __future__ import annotations

from decodelab.serve import Engine, Limits
from decodelab.serve.server import Background

# A minimal chat template: the zoo models are base models without one (the server's --chat-template)
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def start(model, draft=None, name="zoo:code-target", **limits) -> Background:
    """A running Background server for `model` (its .url; stop it with .stop())."""
    bg = Background(Engine(model, draft=draft, name=name, draft_name="zoo:code-draft" if draft else None,
                           limits=Limits(**limits)))
    bg.__enter__()
    return bg


def stream_ids(url: str, body: dict) -> list[int]:
    """The token ids a streamed completion sends (each chunk's decodelab extension)."""
    import json

    import httpx2 as httpx

    ids = []
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith("data: {"):
                ids += json.loads(line[6:])["decodelab"].get("tokens", [])
    return ids


def openai_client(url: str):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
