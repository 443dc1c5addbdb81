"""decodelab: every modern decoding method behind one interface, measured side by side.

    import decodelab
    model = decodelab.load("zoo:code-target")
    out = decodelab.generate(model, "def fib(n):", method="sps", draft=decodelab.load("zoo:code-draft"))
    print(out.text, out.stats.tau)
"""
# The methods package is imported before the methods() function is bound, so that the name
# `decodelab.methods` stays the function (importing a subpackage later would overwrite it).
from . import methods as _builtin_methods  # noqa: F401
from .api import generate, load, methods, stream
from .core.sampling import SamplingConfig
from .errors import DecodeLabError
from .types import DecodeOutput, DecodeStats, Draft, TokenTree

__all__ = ["load", "generate", "stream", "methods", "SamplingConfig", "DecodeLabError", "DecodeOutput",
           "DecodeStats", "Draft", "TokenTree"]
__version__ = "0.1.0"
