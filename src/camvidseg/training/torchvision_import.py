"""torchvision, imported without torch's compiler stack (0.7 s of every stage process's start).

torchvision 0.29 (``torchvision>=0.29,<0.30`` in pyproject.toml) imports ``torch._dynamo.utils``
when it is imported, for one function that only ``torchvision.ops.roi_align`` calls. No network
here calls it, yet every stage that builds one paid for importing ``torch._dynamo`` and sympy:
measured, torch + torchvision + MMEngine in 2.1 s instead of 2.7 s. While torchvision is imported,
a stand-in answers for ``torch._dynamo.utils``: the function torchvision takes from it calls the
real one, importing ``torch._dynamo`` only then, and any other name imports the real module at
once. The stand-in leaves ``sys.modules`` right after, so ``torch._dynamo`` (the ONNX export's
tracer, and torch's optimizers in training) imports as it always does. torchvision means not to
import it eagerly (its roi_align compiles lazily, "This avoids eagerly importing dynamo",
pytorch/vision#8436), but takes this one helper from it at import time.
"""

from __future__ import annotations

import importlib
import sys
import types

DEFERRED = "torch._dynamo.utils"
# The names torchvision's import takes from DEFERRED that are functions, called only at run time.
CALLED_LATER = ("is_compile_supported",)


def real(name: str):
    """``name`` from the real ``torch._dynamo.utils`` (imported now, if it is not yet)."""
    return getattr(importlib.import_module(DEFERRED), name)


def called_later(name: str):
    def call(*args, **kwargs):
        return real(name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def stand_in() -> types.ModuleType:
    module = types.ModuleType(DEFERRED, "stands in for torch._dynamo.utils while torchvision loads")
    for name in CALLED_LATER:
        setattr(module, name, called_later(name))

    def any_other(name: str):  # a name this torchvision takes that is not known to be deferrable
        if name.startswith("__"):  # a module attribute asked of every module (inspect, pickle)
            raise AttributeError(name)
        withdraw(module)
        return real(name)

    module.__getattr__ = any_other
    return module


def withdraw(module: types.ModuleType) -> None:
    if sys.modules.get(DEFERRED) is module:
        del sys.modules[DEFERRED]


def import_torchvision() -> types.ModuleType:
    """``torchvision``, without importing ``torch._dynamo`` where that is not loaded yet."""
    if "torchvision" in sys.modules or DEFERRED in sys.modules:
        import torchvision

        return torchvision
    import torch  # noqa: F401  (torch itself first: its own import must see no stand-in)

    module = stand_in()
    sys.modules[DEFERRED] = module
    try:
        import torchvision
    finally:
        withdraw(module)
    return torchvision
