"""Export options for a finished (pruned) model: fold BatchNorm for inference and convert to
the opset a deployment runtime wants, then prove the result with the full onnx checker.
(Channel widths rounded to multiples of 8/16/32 are the pruning pass's job, not this one's.)"""

from __future__ import annotations

import onnx
from onnx import helper, version_converter

from onnxwootz.core.errors import BadSpecError, first_line
from onnxwootz.core.onnx_helpers import onnx_opset
from onnxwootz.passes.base import PassError, check_model
from onnxwootz.passes.fold_bn import FoldBatchNorm


def export_options(model: onnx.ModelProto, fold_bn: bool = False, opset: int | None = None) -> onnx.ModelProto:
    """A checked copy of `model` with BatchNorm folded (when `fold_bn`) and converted to
    `opset` (when given). The input model is left as it is."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if fold_bn:
        result = FoldBatchNorm()(result).model
    if opset is not None and opset != onnx_opset(result):
        result = convert_opset(result, opset)
    check_model(result)
    return result


def convert_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """onnx's version converter with one-line errors; the IR version is raised to the least one
    that the target opset needs, so runtimes accept the file."""
    latest = onnx.defs.onnx_opset_version()
    if not 1 <= opset <= latest:
        raise BadSpecError(f"target opset must be between 1 and {latest}, got {opset}")
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:
        raise PassError(
            f"cannot convert the model from opset {onnx_opset(model)} to {opset}: {_converter_reason(exc)}"
        ) from None
    needed = helper.find_min_ir_version_for(list(converted.opset_import), ignore_unknown=True)
    converted.ir_version = max(converted.ir_version, needed)
    return converted


def _converter_reason(exc: Exception) -> str:
    """The converter's C++ assertion text without its source path and assertion boilerplate."""
    return first_line(exc).rsplit("failed: ", 1)[-1].strip()
