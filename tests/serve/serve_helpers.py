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


def openai_client(url: str):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
