"""decodelab: every modern decoding method behind one interface, measured side by side.

    import decodelab
    model = decodelab.load("zoo:code-target")
    out = decodelab.generate(model, "def fib(n):", method="sps", draft=decodelab.load("zoo:code-draft"))
    print(out.text, out.stats.tau)
"""
# `decodelab.methods` is the methods package, which is also callable: decodelab.methods() lists
# every registered method (importing the package registers them all).
from . import methods
from .api import generate, load, stream
from .core.sampling import SamplingConfig
from .errors import DecodeLabError
from .extraction import extract
from .request import Request
from .state import State
from .types import DecodeOutput, DecodeStats, Draft, StepTrace, TokenTree

__all__ = ["load", "generate", "stream", "extract", "methods", "State", "Request", "SamplingConfig", "DecodeLabError",
           "DecodeOutput", "DecodeStats", "Draft", "StepTrace", "TokenTree"]
__version__ = "0.1.0"
