"""onnxwootz: composability-based CNN pruning (Wootz, PLDI 2019) for ONNX models.

One function per command; each returns a typed result whose `to_dict()` is what the command
prints with `--json`. Submodules load lazily, so `import onnxwootz` is cheap and never
imports torch."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "analyze": "onnxwootz.analysis",
    "apply": "onnxwootz.pruning",
    "subspace": "onnxwootz.sampling",
    "blocks": "onnxwootz.tuning_blocks",
    "prune": "onnxwootz.pipeline",
    "bench": "onnxwootz.runtime.bench",
    "report": "onnxwootz.reporting",
}

_ERRORS = ("WootzError", "BadModelError", "UnsupportedOpError", "BadDataError", "BadSpecError", "DeviceError",
           "GateError", "InterruptedRunError", "RunDirBusyError", "PruningError")
"""The error hierarchy (onnxwootz.core.errors), for pipelines that catch what a call raises."""

__all__ = sorted([*_API, *_ERRORS])


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in _ERRORS:
        return getattr(importlib.import_module("onnxwootz.core.errors"), name)
    raise AttributeError(f"module 'onnxwootz' has no attribute '{name}'")
