"""Export torch modules to ONNX the two ways users do (the legacy TorchScript exporter and the
dynamo exporter), with their default optimizations (BatchNorm folding included) and a dynamic
batch axis, so that tests see the graphs users will bring. `cached_export` shares one export per
builder and exporter across a test session."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import warnings
from typing import Iterator

import onnx
import torch
from torch import nn

from models import builders
from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.modelio import load_model

EXPORTERS = ("legacy", "dynamo")
INPUT_NAME = "input"
OUTPUT_NAME = "output"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings, log lines and progress prints: library code never prints."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_legacy(module: nn.Module, example_input: torch.Tensor, path: str | os.PathLike[str] | None = None, opset: int = 17) -> onnx.ModelProto:
    """TorchScript exporter (`dynamo=False`), eval mode, constant folding on (folds BatchNorm),
    batch axis dynamic. Writes to `path` when given and returns the model as loaded back."""
    module.eval()
    buffer = io.BytesIO()
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            module, (example_input,), path if path is not None else buffer, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return load_model(path) if path is not None else onnx.load_from_string(buffer.getvalue())


def export_dynamo(module: nn.Module, example_input: torch.Tensor, path: str | os.PathLike[str] | None = None, external_data: bool = False) -> onnx.ModelProto:
    """torch.export-based exporter (`dynamo=True`, needs onnxscript), eval mode, its default
    optimizer on, batch axis dynamic. With `path` and `external_data`, weights go to
    `<path>.data` beside the file. Returns the model (as loaded back when written)."""
    module.eval()
    if example_input.shape[0] < 2:
        # torch.export specializes a size-1 dim to a constant, so trace with batch 2
        example_input = example_input.expand(2, *example_input.shape[1:]).contiguous()
    batch = torch.export.Dim("batch", min=1)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            module, (example_input,), dynamo=True, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
        )
        if path is None:
            return program.model_proto
        program.save(path, external_data=external_data)
    return load_model(path)


def export(module: nn.Module, example: torch.Tensor, exporter: str, path: str | os.PathLike[str] | None = None) -> onnx.ModelProto:
    """Dispatch by exporter name ('legacy' or 'dynamo')."""
    if exporter == "legacy":
        return export_legacy(module, example, path)
    if exporter == "dynamo":
        return export_dynamo(module, example, path)
    raise BadSpecError(f"unknown exporter '{exporter}'; use one of: {', '.join(EXPORTERS)}")


@functools.lru_cache(maxsize=None)
def _cached_bytes(name: str, exporter: str) -> bytes:
    return export(builders.build(name), builders.example_input(1), exporter).SerializeToString()


def cached_export(name: str, exporter: str) -> onnx.ModelProto:
    """A fresh copy of `models.builders.build(name)` exported with `exporter` ('legacy' or
    'dynamo') at batch 1 with a dynamic batch axis, exported once per process; `build(name)`
    gives the matching torch module for output comparisons."""
    return onnx.load_from_string(_cached_bytes(name, exporter))

