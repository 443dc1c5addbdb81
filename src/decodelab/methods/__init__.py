"""One module per method; importing this package imports (and so registers) every module in it.

A method is `run(req: decodelab.request.Request, config) -> Iterator[list[int]]`, registered with
`decodelab.registry.register` and built on one of the family loops (docs/architecture.md).

`decodelab.methods` is both this package and the public listing function: calling the package,
`decodelab.methods()`, returns name -> description of every registered method.
"""
import importlib
import pkgutil
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self) -> dict[str, dict]:
        from ..api import methods

        return methods()


sys.modules[__name__].__class__ = _CallablePackage

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
