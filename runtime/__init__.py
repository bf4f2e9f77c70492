"""Execution: ONNX Runtime sessions and benchmarks, torch views of ONNX graphs, training loops.
Imports are lazy so that `import onnxwootz` never pulls in torch."""

from __future__ import annotations

from typing import Any

__all__ = ["TorchGraph"]


def __getattr__(name: str) -> Any:
    if name == "TorchGraph":
        from onnxwootz.runtime.torch_graph import TorchGraph

        return TorchGraph
    raise AttributeError(name)
