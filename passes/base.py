"""The pass contract (after onnx_ir's passes): a pass states what it requires and ensures,
and returns the model plus whether it changed it; a PassManager runs a list of passes and
re-checks the model after them."""

from __future__ import annotations

import abc
import dataclasses
from typing import Sequence

import onnx

from onnxwootz.core.errors import BadModelError, first_line


class PassError(BadModelError):
    """A pass's precondition or postcondition does not hold."""


@dataclasses.dataclass(frozen=True)
class PassResult:
    model: onnx.ModelProto
    modified: bool


class Pass(abc.ABC):
    """One rewrite with one job. Passes work in place on the ModelProto they are given."""

    def requires(self, model: onnx.ModelProto) -> None:
        """Raise PassError when the model is not fit for this pass."""

    def ensures(self, model: onnx.ModelProto) -> None:
        """Raise PassError when the pass did not establish what it promises."""

    @abc.abstractmethod
    def call(self, model: onnx.ModelProto) -> PassResult: ...

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        self.requires(model)
        result = self.call(model)
        self.ensures(result.model)
        return result

    @property
    def name(self) -> str:
        return type(self).__name__


class PassManager(Pass):
    """Runs passes in order; when anything changed, checks the model with onnx.checker and
    strict shape inference so that no pass can hand a broken graph to the next step."""

    def __init__(self, passes: Sequence[Pass], check: bool = True):
        self.passes = list(passes)
        self.check = check

    def call(self, model: onnx.ModelProto) -> PassResult:
        modified = False
        for step in self.passes:
            result = step(model)
            model = result.model
            modified = modified or result.modified
        if modified and self.check:
            check_model(model)
        return PassResult(model, modified)


def check_model(model: onnx.ModelProto, full: bool = True) -> None:
    """onnx.checker (full_check runs strict shape inference) with a one-line error. Weights are
    checked as typed inputs (onnx_helpers.without_weights): the structure and every shape are
    verified without serializing hundreds of megabytes."""
    from onnxwootz.core.onnx_helpers import without_weights

    try:
        onnx.checker.check_model(without_weights(model), full_check=full)
    except Exception as exc:
        raise PassError(f"the rewritten model is invalid: {first_line(exc)}") from None
